-- The records a recommendation was built from, for the replay proof: one row per distinct
-- record (groups.sql), with `records`, how many records it stands for, and their `num_flows`.
-- Run after groups.sql.
SELECT direction, local_namespace, local_workload, reporter,
       proto, dest_domains, dest_service_namespace, dest_service_name,
       source_type, source_namespace, source_name, source_name_aggr, source_labels,
       source_ip, source_port,
       dest_type, dest_namespace, dest_name, dest_name_aggr, dest_labels, dest_ip, dest_port,
       records, num_flows
FROM tf_recommend_groups
ORDER BY local_namespace, local_workload, direction, source_name_aggr, dest_name_aggr,
         dest_port, proto, first_seen;
