-- Everything the apikey extension defines in a database, one line per fact, in a stable
-- order. Two databases whose lines are equal have the same schema: an upgraded one and a
-- fresh install must give the same lines (tests/tests/upgrade.rs). OIDs never appear, only
-- names and definitions, so two databases compare. Run it with the simple query protocol:
-- the first statement defines a helper for this session only.
CREATE FUNCTION pg_temp.acl(a aclitem[]) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a) AS x), 'default') $$;

WITH ext AS (
    SELECT oid, extnamespace, extconfig, extcondition, extrelocatable
    FROM pg_catalog.pg_extension WHERE extname = 'apikey'
),
members AS (
    SELECT d.classid, d.objid
    FROM pg_catalog.pg_depend d, ext
    WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass
      AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rels AS (
    SELECT n.nspname || '.' || c.relname AS name, c.*
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid IN (SELECT objid FROM members WHERE classid = 'pg_catalog.pg_class'::regclass)
       OR c.oid IN (SELECT i.indexrelid FROM pg_catalog.pg_index i
                    JOIN members m ON m.objid = i.indrelid
                    WHERE m.classid = 'pg_catalog.pg_class'::regclass)
),
procs AS (
    SELECT p.*
    FROM pg_catalog.pg_proc p
    WHERE p.oid IN (SELECT objid FROM members WHERE classid = 'pg_catalog.pg_proc'::regclass)
),
facts(fact) AS (
    SELECT 'extension relocatable=' || extrelocatable
        || ' schema=' || extnamespace::regnamespace::text FROM ext
    UNION ALL
    SELECT 'config-dump ' || c::regclass::text || ' where=' || coalesce(w, '')
    FROM ext, unnest(extconfig, extcondition) AS u(c, w)
    UNION ALL
    SELECT 'member ' || pg_catalog.pg_describe_object(classid, objid, 0) FROM members
    UNION ALL
    SELECT 'schema ' || n.nspname || ' owner-is-superuser=' || r.rolsuper
        || ' acl=' || pg_temp.acl(n.nspacl)
        || ' comment=' || coalesce(pg_catalog.obj_description(n.oid, 'pg_namespace'), '')
    FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
    WHERE n.oid IN (SELECT objid FROM members
                    WHERE classid = 'pg_catalog.pg_namespace'::regclass)
       OR n.oid = (SELECT extnamespace FROM ext)
    UNION ALL
    SELECT 'relation ' || name || ' kind=' || relkind::text || ' persistence=' || relpersistence::text
        || ' rls=' || relrowsecurity || ' force-rls=' || relforcerowsecurity
        || ' options=' || coalesce(reloptions::text, '')
        || ' acl=' || pg_temp.acl(relacl)
        || ' comment=' || coalesce(pg_catalog.obj_description(oid, 'pg_class'), '')
    FROM rels
    UNION ALL
    -- Columns in their visible order (a column added by an upgrade comes last, so a fresh
    -- install must define it last too).
    SELECT 'column ' || r.name || ' #'
        || row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum)
        || ' ' || a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
        || ' not-null=' || a.attnotnull
        || ' default=' || coalesce(pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), '')
        || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
        || ' collation=' || coalesce(nullif(a.attcollation, 0)::regcollation::text, '')
        || ' acl=' || pg_temp.acl(a.attacl)
        || ' comment=' || coalesce(pg_catalog.col_description(r.oid, a.attnum), '')
    FROM rels r
    JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
    WHERE r.relkind IN ('r', 'v', 'p')
    UNION ALL
    SELECT 'constraint ' || r.name || ' ' || co.conname || ' '
        || pg_catalog.pg_get_constraintdef(co.oid, true)
    FROM pg_catalog.pg_constraint co JOIN rels r ON r.oid = co.conrelid
    UNION ALL
    SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid)
    FROM pg_catalog.pg_index i JOIN rels r ON r.oid = i.indrelid
    UNION ALL
    SELECT 'trigger ' || r.name || ' ' || pg_catalog.pg_get_triggerdef(t.oid, true)
        || ' enabled=' || t.tgenabled::text
    FROM pg_catalog.pg_trigger t JOIN rels r ON r.oid = t.tgrelid
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT 'policy ' || r.name || ' ' || p.polname || ' cmd=' || p.polcmd::text
        || ' permissive=' || p.polpermissive
        || ' roles=' || (SELECT string_agg(CASE WHEN x = 0 THEN 'public' ELSE x::regrole::text END,
                                           ',' ORDER BY 1)
                         FROM unnest(p.polroles) AS x)
        || ' using=' || coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '')
        || ' check=' || coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '')
    FROM pg_catalog.pg_policy p JOIN rels r ON r.oid = p.polrelid
    UNION ALL
    SELECT 'view ' || r.name || ' ' || pg_catalog.pg_get_viewdef(r.oid, true)
    FROM rels r WHERE r.relkind = 'v'
    UNION ALL
    SELECT 'sequence ' || r.name || ' ' || s.seqtypid::regtype || ' start=' || s.seqstart
        || ' increment=' || s.seqincrement || ' cycle=' || s.seqcycle
        || ' owned-by=' || coalesce((SELECT d.refobjid::regclass || '.' || a.attname
                                     FROM pg_catalog.pg_depend d
                                     JOIN pg_catalog.pg_attribute a
                                       ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                     WHERE d.classid = 'pg_catalog.pg_class'::regclass
                                       AND d.objid = r.oid AND d.deptype = 'a'), '')
    FROM rels r JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure
        || ' args=' || pg_catalog.pg_get_function_arguments(p.oid)
        || ' result=' || pg_catalog.pg_get_function_result(p.oid)
        || ' kind=' || p.prokind::text || ' language=' || l.lanname
        || ' security-definer=' || p.prosecdef || ' volatility=' || p.provolatile::text
        || ' parallel=' || p.proparallel::text || ' strict=' || p.proisstrict
        || ' leakproof=' || p.proleakproof || ' set=' || coalesce(p.proconfig::text, '')
        || ' cost=' || p.procost || ' rows=' || p.prorows
        || ' source=' || CASE WHEN l.lanname = 'c' THEN p.prosrc ELSE md5(p.prosrc) END
        || ' library=' || coalesce(p.probin, '')
        || ' acl=' || pg_temp.acl(p.proacl)
        || ' comment=' || coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), '')
    FROM procs p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
    UNION ALL
    SELECT 'type ' || t.oid::regtype || ' kind=' || t.typtype::text
    FROM pg_catalog.pg_type t
    WHERE t.oid IN (SELECT objid FROM members WHERE classid = 'pg_catalog.pg_type'::regclass)
    UNION ALL
    SELECT 'role ' || rolname || ' login=' || rolcanlogin || ' inherit=' || rolinherit
    FROM pg_catalog.pg_roles WHERE rolname IN ('apikey_admin', 'apikey_verifier', 'apikey_partner')
)
SELECT fact FROM facts ORDER BY fact COLLATE "C";
