-- Per workload, direction, remote peer, port, protocol, domains and service: the traffic a
-- recommendation is built from, with its volumes. Run after groups.sql (whose groups are
-- finer than these, so summing their volumes gives the records' own sums).
-- Labels are the distinct label maps seen (aggregated records carry the labels common to
-- their pods); the caller intersects them.
SELECT direction, local_namespace AS namespace, local_workload AS workload,
       CASE direction WHEN 'egress' THEN dest_type ELSE source_type END AS peer_type,
       CASE direction WHEN 'egress' THEN dest_namespace ELSE source_namespace END
           AS peer_namespace,
       CASE direction WHEN 'egress' THEN dest_name_aggr ELSE source_name_aggr END
           AS peer_name_aggr,
       dest_port, proto,
       list_sort(list_distinct(coalesce(dest_domains, []::VARCHAR[]))) AS domains,
       dest_service_namespace AS service_namespace, dest_service_name AS service_name,
       list(DISTINCT CASE direction WHEN 'egress' THEN source_labels ELSE dest_labels END)
           AS local_labels,
       list(DISTINCT CASE direction WHEN 'egress' THEN dest_labels ELSE source_labels END)
           AS peer_labels,
       list_sort(list(DISTINCT CASE direction WHEN 'egress' THEN dest_ip ELSE source_ip END)
                 FILTER (WHERE (CASE direction WHEN 'egress' THEN dest_ip
                                ELSE source_ip END) IS NOT NULL)) AS peer_ips,
       sum(num_flows)::BIGINT AS connections,
       sum(bytes)::BIGINT AS bytes,
       sum(packets)::BIGINT AS packets,
       sum(records)::BIGINT AS records,
       min(first_seen) AS first_seen, max(last_seen) AS last_seen
FROM tf_recommend_groups
GROUP BY ALL
ORDER BY namespace, workload, direction, peer_type, peer_namespace, peer_name_aggr, proto,
         dest_port, domains, service_namespace, service_name;
