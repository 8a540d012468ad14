-- Egress from workloads to destinations outside the cluster's workloads: by DNS name when
-- one is known, else by network set (type ns) or pvt/pub. Parameters: $since, $until,
-- $namespace (NULL for all). A record with several names counts under each of them.
SELECT source_namespace, source_name_aggr,
       coalesce(d, CASE dest_type WHEN 'ns' THEN 'networkset:' || dest_name_aggr
                                  ELSE dest_name_aggr END) AS destination,
       dest_type, dest_port, proto, action,
       sum(num_flows)::BIGINT AS connections,
       sum(bytes_in + bytes_out)::BIGINT AS bytes,
       min(start_time) AS first_seen, max(end_time) AS last_seen
FROM (SELECT *, unnest(CASE WHEN len(dest_domains) > 0 THEN dest_domains
                            ELSE [NULL::VARCHAR] END) AS d
      FROM flows
      WHERE end_time > $since AND start_time < $until AND starts_with(reporter, 'src')
        AND source_type = 'wep' AND dest_type IN ('ns', 'net')
        AND ($namespace IS NULL OR source_namespace = $namespace))
GROUP BY ALL
ORDER BY bytes DESC, source_namespace, source_name_aggr, destination, dest_type, dest_port,
         proto, action
