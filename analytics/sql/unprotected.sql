-- Allowed traffic no policy decided: the enforced trace ends in a profile (Calico's
-- "__PROFILE__...|allow" signature, reference/calico.md §1.4) — what recommendation works
-- from. Parameters: $since, $until, $namespace (NULL for all).
SELECT CASE WHEN starts_with(reporter, 'src') THEN source_namespace ELSE dest_namespace END AS namespace,
       CASE WHEN starts_with(reporter, 'src') THEN source_name_aggr ELSE dest_name_aggr END AS workload,
       reporter, source_namespace, source_name_aggr, dest_namespace, dest_name_aggr, dest_type,
       dest_port, proto,
       sum(num_flows)::BIGINT AS connections,
       sum(bytes_in + bytes_out)::BIGINT AS bytes,
       min(start_time) AS first_seen, max(end_time) AS last_seen
FROM flows
WHERE end_time > $since AND start_time < $until AND action = 'allow'
  AND len(list_filter(enforced_policies,
                      lambda h: split_part(h, '|', 2) = '__PROFILE__')) > 0
  AND ($namespace IS NULL OR source_namespace = $namespace OR dest_namespace = $namespace)
GROUP BY ALL
ORDER BY namespace, workload, reporter, source_namespace, source_name_aggr, dest_namespace,
         dest_name_aggr, dest_type, dest_port, proto
