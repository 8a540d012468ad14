-- Top talkers: workloads (or network sets, pvt/pub) by bytes sent and received, counted at
-- the reporting end. Parameters: $since, $until, $limit, $namespace (NULL for all).
SELECT CASE WHEN starts_with(reporter, 'src') THEN source_namespace ELSE dest_namespace END AS namespace,
       CASE WHEN starts_with(reporter, 'src') THEN source_name_aggr ELSE dest_name_aggr END AS workload,
       sum(bytes_out)::BIGINT AS bytes_sent, sum(bytes_in)::BIGINT AS bytes_received,
       sum(num_flows)::BIGINT AS connections,
       coalesce(sum(num_flows) FILTER (action = 'deny'), 0)::BIGINT AS denied_connections
FROM flows
WHERE end_time > $since AND start_time < $until
  AND ($namespace IS NULL
       OR (CASE WHEN starts_with(reporter, 'src') THEN source_namespace ELSE dest_namespace END) = $namespace)
GROUP BY ALL
ORDER BY bytes_sent + bytes_received DESC, namespace, workload
LIMIT $limit
