-- The policies board (reference/calico.md §9, as Goldmane's statistics credit flows): per
-- tier, policy and rule, the packets and bytes of every record whose enforced or pending trace
-- hit it (each rule once per record), by the hit's action and in/out as the reporting endpoint
-- saw them; connections in for dst-reported and out for src-reported records; first and last
-- hit. End-of-tier hits (rule -1) are credited to the policy that triggered them. A rule's
-- direction is the reporter's: ingress rules decide dst-reported records, egress rules
-- src-reported ones (Calico's rule_direction).
-- Parameters: $since, $until (timestamps; records overlapping the window count).
-- Reads board_flows (the records of the window's hours that are not fully rolled up) and
-- board_rollups (the hourly hit rollups of the hours inside the window), which
-- analytics.queries.board defines per call; together they cover every record once.
WITH traces AS (
    -- Records repeat a few thousand distinct trace pairs: sum per pair first, so the hit
    -- lists are taken apart once per pair rather than once per record.
    SELECT reporter, enforced_policies, pending_policies,
           sum(packets_in) AS packets_in, sum(packets_out) AS packets_out,
           sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out,
           sum(num_flows) AS num_flows, min(start_time) AS start_time,
           max(end_time) AS end_time
    FROM board_flows
    WHERE end_time > $since AND start_time < $until
    GROUP BY reporter, enforced_policies, pending_policies
),
records AS (
    SELECT reporter, packets_in, packets_out, bytes_in, bytes_out, num_flows,
           start_time, end_time,
           -- "tier|name|action|rule" without the position, so a rule hit by both the
           -- enforced and the pending trace counts once for the record.
           list_distinct(list_transform(
               list_concat(coalesce(enforced_policies, []::VARCHAR[]),
                           coalesce(pending_policies, []::VARCHAR[])),
               lambda h: substr(h, strpos(h, '|') + 1))) AS hits
    FROM traces
),
per_hit AS (
    SELECT hit, reporter, sum(packets_in) AS packets_in, sum(packets_out) AS packets_out,
           sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out,
           sum(num_flows) AS connections, min(start_time) AS first_hit,
           max(end_time) AS last_hit
    FROM (SELECT unnest(hits) AS hit, * EXCLUDE (hits) FROM records)
    GROUP BY hit, reporter
    UNION ALL
    SELECT hit, reporter, sum(packets_in), sum(packets_out), sum(bytes_in), sum(bytes_out),
           sum(connections), min(first_hit), max(last_hit)
    FROM board_rollups
    GROUP BY hit, reporter
),
parsed AS (
    SELECT split_part(hit, '|', 1) AS tier,
           tf_hit_kind(split_part(hit, '|', 1), split_part(hit, '|', 2)) AS kind,
           tf_hit_namespace(split_part(hit, '|', 1), split_part(hit, '|', 2)) AS namespace,
           tf_hit_policy(split_part(hit, '|', 1), split_part(hit, '|', 2)) AS policy,
           coalesce(TRY_CAST(nullif(split_part(hit, '|', 4), '') AS INTEGER), -2) AS rule,
           CASE split_part(hit, '|', 3) WHEN 'eot-deny' THEN 'deny'
                ELSE split_part(hit, '|', 3) END AS action,
           * EXCLUDE (hit)
    FROM per_hit
)
SELECT tier, kind, namespace, policy,
       CASE WHEN starts_with(reporter, 'dst') THEN 'ingress' ELSE 'egress' END AS direction,
       rule, starts_with(kind, 'Staged') AS staged,
       rule = -1 OR kind = 'EndOfTier' AS end_of_tier,
       coalesce(sum(packets_in) FILTER (action = 'allow'), 0)::BIGINT AS allowed_packets_in,
       coalesce(sum(packets_out) FILTER (action = 'allow'), 0)::BIGINT AS allowed_packets_out,
       coalesce(sum(bytes_in) FILTER (action = 'allow'), 0)::BIGINT AS allowed_bytes_in,
       coalesce(sum(bytes_out) FILTER (action = 'allow'), 0)::BIGINT AS allowed_bytes_out,
       coalesce(sum(packets_in) FILTER (action = 'deny'), 0)::BIGINT AS denied_packets_in,
       coalesce(sum(packets_out) FILTER (action = 'deny'), 0)::BIGINT AS denied_packets_out,
       coalesce(sum(bytes_in) FILTER (action = 'deny'), 0)::BIGINT AS denied_bytes_in,
       coalesce(sum(bytes_out) FILTER (action = 'deny'), 0)::BIGINT AS denied_bytes_out,
       coalesce(sum(packets_in) FILTER (action = 'pass'), 0)::BIGINT AS passed_packets_in,
       coalesce(sum(packets_out) FILTER (action = 'pass'), 0)::BIGINT AS passed_packets_out,
       coalesce(sum(bytes_in) FILTER (action = 'pass'), 0)::BIGINT AS passed_bytes_in,
       coalesce(sum(bytes_out) FILTER (action = 'pass'), 0)::BIGINT AS passed_bytes_out,
       coalesce(sum(connections) FILTER (action = 'allow' AND starts_with(reporter, 'dst')), 0)::BIGINT
           AS allowed_connections_in,
       coalesce(sum(connections) FILTER (action = 'allow' AND starts_with(reporter, 'src')), 0)::BIGINT
           AS allowed_connections_out,
       coalesce(sum(connections) FILTER (action = 'deny' AND starts_with(reporter, 'dst')), 0)::BIGINT
           AS denied_connections_in,
       coalesce(sum(connections) FILTER (action = 'deny' AND starts_with(reporter, 'src')), 0)::BIGINT
           AS denied_connections_out,
       coalesce(sum(connections) FILTER (action = 'pass' AND starts_with(reporter, 'dst')), 0)::BIGINT
           AS passed_connections_in,
       coalesce(sum(connections) FILTER (action = 'pass' AND starts_with(reporter, 'src')), 0)::BIGINT
           AS passed_connections_out,
       min(first_hit) AS first_hit, max(last_hit) AS last_hit
FROM parsed
GROUP BY tier, kind, namespace, policy, direction, rule
ORDER BY tier = '__PROFILE__', tier, namespace NULLS FIRST, policy, kind, direction, rule
