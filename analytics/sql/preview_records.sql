-- The window's records for a policy re-evaluation (preview, stats --staged), summed per
-- distinct evaluation key (policy.batch.KEY_COLUMNS) and recorded verdict: records that
-- differ in nothing a policy can read are evaluated once.
-- Parameters: $since, $until (records overlapping the window count); $pruned and
-- $namespaces: when $pruned, only records with an end in one of $namespaces (a change to
-- namespaced policies can only touch those: analytics.preview); $with_pending: whether
-- records are told apart by their recorded pending trace (only stats --staged reads it).
SELECT reporter, proto, dest_domains, dest_service_namespace, dest_service_name,
       source_type, source_namespace, source_name, source_name_aggr, source_labels,
       source_ip, source_port,
       dest_type, dest_namespace, dest_name, dest_name_aggr, dest_labels, dest_ip, dest_port,
       action AS recorded_action, enforced_policies AS recorded_policies,
       CASE WHEN $with_pending THEN pending_policies END AS recorded_pending,
       count(*) AS records, sum(num_flows)::BIGINT AS connections,
       sum(packets_in)::BIGINT AS packets_in, sum(packets_out)::BIGINT AS packets_out,
       sum(bytes_in)::BIGINT AS bytes_in, sum(bytes_out)::BIGINT AS bytes_out,
       min(start_time) AS first_seen, max(end_time) AS last_seen
FROM flows
WHERE end_time > $since AND start_time < $until
  AND (NOT $pruned OR list_contains($namespaces, source_namespace)
       OR list_contains($namespaces, dest_namespace))
GROUP BY ALL
