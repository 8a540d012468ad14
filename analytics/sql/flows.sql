-- The flow visualizer's edges: per source workload (namespace, replica-set prefix) and peer,
-- ports, protocols, verdicts and volumes. Parameters: $since, $until, and filters that are
-- NULL when unused: $namespace (either side), $workload (prefix of either side's name_aggr),
-- $action, $reporter.
SELECT source_namespace, source_name_aggr, source_type,
       dest_namespace, dest_name_aggr, dest_type, dest_port, proto, action, reporter,
       nullif(list_sort(list_distinct(flatten(list(dest_domains)))), []::VARCHAR[])
           AS dest_domains,
       sum(num_flows)::BIGINT AS connections,
       sum(packets_in + packets_out)::BIGINT AS packets,
       sum(bytes_in)::BIGINT AS bytes_in, sum(bytes_out)::BIGINT AS bytes_out,
       min(start_time) AS first_seen, max(end_time) AS last_seen
FROM flows
WHERE end_time > $since AND start_time < $until
  AND ($namespace IS NULL OR source_namespace = $namespace OR dest_namespace = $namespace)
  AND ($workload IS NULL OR starts_with(source_name_aggr, $workload)
       OR starts_with(dest_name_aggr, $workload))
  AND ($action IS NULL OR action = $action)
  AND ($reporter IS NULL OR reporter = $reporter)
GROUP BY ALL
ORDER BY source_namespace, source_name_aggr, source_type, dest_namespace, dest_name_aggr,
         dest_type, dest_port, proto, action, reporter
