-- The records a recommendation was built from, for the replay proof: the batch evaluator's
-- key columns, with the reporter reduced to 'src'/'dst' (a transit 'src,fwd' record is
-- decided where it was reported), and their volumes. Run after macros.sql.
-- Parameters: $since, $until, $namespace (NULL: all), $workload (prefix; NULL: all).
SELECT direction, local_namespace, local_workload,
       CASE direction WHEN 'egress' THEN 'src' ELSE 'dst' END AS reporter,
       proto, dest_domains, dest_service_namespace, dest_service_name,
       source_type, source_namespace, source_name, source_name_aggr, source_labels,
       source_ip, source_port,
       dest_type, dest_namespace, dest_name, dest_name_aggr, dest_labels, dest_ip, dest_port,
       num_flows, bytes_in + bytes_out AS bytes, start_time, end_time
FROM tf_recommend_records($since, $until, $namespace, $workload)
ORDER BY local_namespace, local_workload, direction, start_time, source_name_aggr,
         dest_name_aggr, dest_port, proto;
