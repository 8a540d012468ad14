-- The records a recommendation learns from (macros.sql), grouped by every column the rest of
-- the run reads: the batch evaluator's key columns (policy.batch.KEY_COLUMNS), the local end,
-- and the direction; with their volumes. observed.sql and records.sql both read this table,
-- so the flows are scanned once and the replay evaluates each distinct record once, weighted
-- by `records` (its count) and `num_flows`. Run after macros.sql; drop_groups.sql drops it.
-- Parameters: $since, $until, $namespace (NULL: all), $workload (prefix; NULL: all).
-- The reporter is reduced to 'src'/'dst' (a transit 'src,fwd' record is decided where it was
-- reported).
CREATE OR REPLACE TEMP TABLE tf_recommend_groups AS
SELECT direction, local_namespace, local_workload,
       CASE direction WHEN 'egress' THEN 'src' ELSE 'dst' END AS reporter,
       proto, dest_domains, dest_service_namespace, dest_service_name,
       source_type, source_namespace, source_name, source_name_aggr, source_labels,
       source_ip, source_port,
       dest_type, dest_namespace, dest_name, dest_name_aggr, dest_labels, dest_ip, dest_port,
       count(*)::BIGINT AS records,
       sum(num_flows)::BIGINT AS num_flows,
       sum(bytes_in + bytes_out)::BIGINT AS bytes,
       sum(packets_in + packets_out)::BIGINT AS packets,
       min(start_time) AS first_seen, max(end_time) AS last_seen
FROM tf_recommend_records($since, $until, $namespace, $workload)
GROUP BY ALL;
