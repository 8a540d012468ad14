-- Views over the flows view (one row per Calico flow-log record). Run after macros.sql.

-- One row per hit of a record's enforced or pending trace, parsed. A record's counters
-- repeat on each of its hits: sum them per policy, never across policies.
CREATE OR REPLACE VIEW policy_hits AS
WITH hits AS (
    SELECT f.*, 'enforced' AS trace, unnest(f.enforced_policies) AS hit FROM flows AS f
    UNION ALL BY NAME
    SELECT f.*, 'pending' AS trace, unnest(f.pending_policies) AS hit FROM flows AS f
)
SELECT
    start_time, end_time, host, collector, reporter, action AS flow_action, proto,
    source_namespace, source_name_aggr, source_type, dest_namespace, dest_name_aggr,
    dest_type, dest_port, packets_in, packets_out, bytes_in, bytes_out, num_flows,
    num_flows_started, num_flows_completed, trace, hit,
    CAST(split_part(hit, '|', 1) AS INTEGER) AS position,
    split_part(hit, '|', 2) AS tier,
    tf_hit_kind(split_part(hit, '|', 2), split_part(hit, '|', 3)) AS kind,
    tf_hit_namespace(split_part(hit, '|', 2), split_part(hit, '|', 3)) AS namespace,
    tf_hit_policy(split_part(hit, '|', 2), split_part(hit, '|', 3)) AS policy,
    starts_with(tf_hit_kind(split_part(hit, '|', 2), split_part(hit, '|', 3)), 'Staged')
        AS staged,
    tf_hit_action(hit) AS action,
    tf_hit_rule(hit) AS rule,
    tf_hit_rule(hit) = -1
        OR tf_hit_kind(split_part(hit, '|', 2), split_part(hit, '|', 3)) = 'EndOfTier'
        AS end_of_tier
FROM hits;

-- Workloads seen on either side of a record: per namespace and replica-set prefix, the
-- labels of the latest record (aggregated records carry the labels common to the pods).
CREATE OR REPLACE VIEW endpoints AS
WITH sides AS (
    SELECT source_type AS type, source_namespace AS namespace, source_name_aggr AS name_aggr,
           source_labels AS labels, start_time, end_time, host FROM flows
    UNION ALL
    SELECT dest_type, dest_namespace, dest_name_aggr, dest_labels, start_time, end_time, host
    FROM flows
)
SELECT type, namespace, name_aggr, arg_max(labels, end_time) AS labels,
       min(start_time) AS first_seen, max(end_time) AS last_seen, count(*) AS records,
       list(DISTINCT host ORDER BY host) AS hosts
FROM sides
WHERE type IN ('wep', 'hep')
GROUP BY type, namespace, name_aggr;
