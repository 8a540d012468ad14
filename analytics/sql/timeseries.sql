-- Per flush interval: records, connections and bytes, allowed and denied.
-- Parameters: $since, $until, $namespace (records from or to it; NULL for all).
SELECT start_time,
       count(*) AS records,
       coalesce(sum(num_flows) FILTER (action = 'allow'), 0)::BIGINT AS allowed_connections,
       coalesce(sum(num_flows) FILTER (action = 'deny'), 0)::BIGINT AS denied_connections,
       sum(bytes_in + bytes_out)::BIGINT AS bytes
FROM flows
WHERE end_time > $since AND start_time < $until
  AND ($namespace IS NULL OR source_namespace = $namespace OR dest_namespace = $namespace)
GROUP BY start_time
ORDER BY start_time
