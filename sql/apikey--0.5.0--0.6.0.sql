-- apikey 0.5.0 -> 0.6.0. Run by ALTER EXTENSION apikey UPDATE, never by hand.
\echo Use "ALTER EXTENSION apikey UPDATE" to load this file. \quit

-- Resource scopes (resource/instance:action) need no schema change: scopes stay text[], and
-- the library validates and matches them. Their any-of check is new.
CREATE FUNCTION @extschema@."apikey_has_any_scope"(
	"granted" TEXT[],
	"required" TEXT[]
) RETURNS bool
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'apikey_has_any_scope_wrapper';
REVOKE ALL ON FUNCTION @extschema@.apikey_has_any_scope(text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.apikey_has_any_scope(text[], text[])
    TO apikey_admin, apikey_partner;
