-- What recommendation learns from (reference/calico.md §7.3 steps 1-2), as a table macro;
-- groups.sql reads it once for both the aggregate (observed.sql) and the replay (records.sql),
-- so the two see exactly the same rows.
--
-- A record counts when it is allowed, overlaps [since, until), and its enforced trace holds a
-- profile hit ("__PROFILE__...|allow", §1.4: no policy decided it). It is an egress record of
-- a workload when the source reported it ('src', 'src,fwd') and the source is a workload
-- endpoint of the namespace; an ingress record when the destination reported it and the
-- destination is a workload endpoint of the namespace. `ns` NULL: every namespace;
-- `prefix` NULL: every workload, else replica-set prefixes (name_aggr) starting with it.
CREATE OR REPLACE MACRO tf_recommend_records(since, until, ns, prefix) AS TABLE
WITH sided AS (
    SELECT *,
           CASE WHEN starts_with(reporter, 'src') THEN 'egress'
                WHEN starts_with(reporter, 'dst') THEN 'ingress' END AS direction
    FROM flows
    WHERE end_time > since AND start_time < until AND action = 'allow'
      AND len(list_filter(enforced_policies,
                          lambda h: split_part(h, '|', 2) = '__PROFILE__')) > 0
)
SELECT *,
       CASE direction WHEN 'egress' THEN source_namespace ELSE dest_namespace END
           AS local_namespace,
       CASE direction WHEN 'egress' THEN source_name_aggr ELSE dest_name_aggr END
           AS local_workload
FROM sided
WHERE (direction = 'egress' AND source_type = 'wep'
       AND (ns IS NULL OR source_namespace = ns)
       AND (prefix IS NULL OR starts_with(source_name_aggr, prefix)))
   OR (direction = 'ingress' AND dest_type = 'wep'
       AND (ns IS NULL OR dest_namespace = ns)
       AND (prefix IS NULL OR starts_with(dest_name_aggr, prefix)));
