-- Calico policy-hit strings (reference/calico.md §1.4), parsed in SQL so that every DuckDB
-- client of the store (tierflow sql, a catalog opened in the duckdb CLI or DBeaver) gets the
-- same policy_hits view. Mirrors policy.hits.parse_hit; tests/test_hit_sql.py checks
-- the two agree on every format.
--   classic Enterprise  1|default|storefront/default.trusted|allow|1
--                       0|default|dev/staged:knp.default.deny-all|deny|-1
--   older staged        0|tier1|ns2/staged:tier1.policy1|allow|0
--   OSS >= 3.32         0|default|np:storefront/trusted|allow|1, 1|t|eot:__NO_MATCH__|deny|-1
--   legacy all_policies 0|__PROFILE__|__PROFILE__.kns.kube-system|allow   (no rule: -2)

CREATE OR REPLACE MACRO tf_oss_kind(name) AS
    CASE regexp_extract(name, '^(np|gnp|snp|sgnp|sknp|knp|kcnp|pro):', 1)
        WHEN 'np' THEN 'NetworkPolicy'
        WHEN 'gnp' THEN 'GlobalNetworkPolicy'
        WHEN 'snp' THEN 'StagedNetworkPolicy'
        WHEN 'sgnp' THEN 'StagedGlobalNetworkPolicy'
        WHEN 'sknp' THEN 'StagedKubernetesNetworkPolicy'
        WHEN 'knp' THEN 'KubernetesNetworkPolicy'
        WHEN 'kcnp' THEN 'ClusterNetworkPolicy'
        WHEN 'pro' THEN 'Profile'
        ELSE NULL END;

-- The name part after "<namespace>/" (classic format), or all of it.
CREATE OR REPLACE MACRO tf_local(name) AS
    CASE WHEN contains(name, '/') THEN substr(name, strpos(name, '/') + 1) ELSE name END;

-- The classic local part without the staged markers: "staged:t.x" and "t.staged:x" → "t.x".
CREATE OR REPLACE MACRO tf_unstaged(tier, local) AS
    CASE WHEN starts_with(local, tier || '.staged:')
         THEN tier || '.' || substr(local, length(tier || '.staged:') + 1)
         ELSE local END;

CREATE OR REPLACE MACRO tf_hit_kind(tier, name) AS
    CASE
        WHEN tf_oss_kind(name) IS NOT NULL THEN tf_oss_kind(name)
        WHEN starts_with(name, 'eot:') THEN 'EndOfTier'
        WHEN tier = '__PROFILE__' OR starts_with(name, '__PROFILE__.') THEN 'Profile'
        WHEN starts_with(tf_local(name), 'knp.default.') THEN 'KubernetesNetworkPolicy'
        WHEN starts_with(tf_local(name), 'staged:knp.default.')
            THEN 'StagedKubernetesNetworkPolicy'
        WHEN starts_with(tf_local(name), 'staged:')
             OR starts_with(tf_local(name), tier || '.staged:')
            THEN CASE WHEN contains(name, '/') THEN 'StagedNetworkPolicy'
                      ELSE 'StagedGlobalNetworkPolicy' END
        ELSE CASE WHEN contains(name, '/') THEN 'NetworkPolicy' ELSE 'GlobalNetworkPolicy' END
    END;

CREATE OR REPLACE MACRO tf_hit_namespace(tier, name) AS
    CASE
        WHEN tf_oss_kind(name) IS NOT NULL THEN
            CASE WHEN contains(substr(name, strpos(name, ':') + 1), '/')
                 THEN regexp_extract(substr(name, strpos(name, ':') + 1), '^(.*)/[^/]*$', 1)
                 ELSE NULL END
        WHEN starts_with(name, 'eot:') OR tier = '__PROFILE__'
             OR starts_with(name, '__PROFILE__.') THEN NULL
        WHEN contains(name, '/') THEN nullif(split_part(name, '/', 1), '')
        ELSE NULL
    END;

-- The policy's own name (without namespace, tier prefix or staged marker).
CREATE OR REPLACE MACRO tf_hit_policy(tier, name) AS
    CASE
        WHEN tf_oss_kind(name) IS NOT NULL
            THEN regexp_extract(substr(name, strpos(name, ':') + 1), '([^/]*)$', 1)
        WHEN starts_with(name, 'eot:') THEN substr(name, 5)
        WHEN tier = '__PROFILE__' OR starts_with(name, '__PROFILE__.')
            THEN CASE WHEN starts_with(name, '__PROFILE__.') THEN substr(name, 13) ELSE name END
        WHEN starts_with(tf_local(name), 'knp.default.') THEN substr(tf_local(name), 13)
        WHEN starts_with(tf_local(name), 'staged:knp.default.') THEN substr(tf_local(name), 20)
        ELSE substr(tf_unstaged(tier, CASE WHEN starts_with(tf_local(name), 'staged:')
                                           THEN substr(tf_local(name), 8)
                                           ELSE tf_local(name) END),
                    length(tier) + 2)
    END;

CREATE OR REPLACE MACRO tf_hit_action(hit) AS
    CASE split_part(hit, '|', 4) WHEN 'eot-deny' THEN 'deny' ELSE split_part(hit, '|', 4) END;

CREATE OR REPLACE MACRO tf_hit_rule(hit) AS
    coalesce(TRY_CAST(nullif(split_part(hit, '|', 5), '') AS INTEGER), -2);
