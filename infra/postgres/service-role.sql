-- One Lockstep service's Postgres role: it logs in, owns its own schema and nothing else.
-- Run by the superuser (infra/lockstep-infra up, the Docker image's init, the chaos suite's
-- own cluster), connected to the Lockstep database, with the psql variables
--   role    the service's role (lockstep_svc_<service>)
--   pw      its password (fed on stdin, never on a command line)
--   admin   the administrator (lockstep): a member of every service role, so that it can
--           read every schema (the CLI's readers) and drop a namespace's schemas
--   schema  the installation's schema of the service (<namespace>_<service>); optional
--           (without it the service creates its schema at its first start)
-- Idempotent: a second run keeps the role, sets the password again (the credentials file is
-- the truth) and changes nothing else.
SET client_min_messages = warning;
\set ON_ERROR_STOP 1

SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
              'NOBYPASSRLS PASSWORD %L', :'role', :'pw') \gexec

-- CONNECT, and CREATE on the database: a service creates its schema at its first start, in
-- whichever namespace it runs (tests and benchmarks make their own). A role could therefore
-- create schemas of other names, but never touch one it does not own (start-up refuses a
-- schema owned by another role). PUBLIC keeps neither CONNECT nor TEMPORARY here.
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT, CREATE ON DATABASE %I TO %I', current_database(), :'role') \gexec
SELECT format('GRANT %I TO %I', :'role', :'admin') \gexec

-- PostgreSQL 15 and later grant PUBLIC only USAGE on `public`; older ones also CREATE.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The installation's schema is made by the administrator for the role, so no other role can
-- take its name first; one made before roles existed (by the administrator) is handed over
-- with what the administrator made in it. Nothing another role owns is handed over: a schema
-- another role took first stays its own, and the service refuses to start on it (it says so).
\if :{?schema}
SELECT format('CREATE SCHEMA %I AUTHORIZATION %I', :'schema', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :'schema') \gexec
SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, :'role')
  FROM pg_namespace
 WHERE nspname = :'schema' AND nspowner = (SELECT oid FROM pg_roles WHERE rolname = :'admin') \gexec
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                             ELSE 'TABLE' END,
              n.nspname, c.relname, :'role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :'schema'
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
   AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = :'admin')
   -- a table's own sequences (serial, identity) follow their table
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.deptype IN ('a', 'i') AND c.relkind = 'S') \gexec
SELECT format('ALTER ROUTINE %I.%I(%s) OWNER TO %I',
              n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), :'role')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = :'schema'
   AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = :'admin') \gexec
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
              n.nspname, t.typname, :'role')
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = :'schema' AND t.typtype IN ('e', 'd', 'r')
   AND t.typowner = (SELECT oid FROM pg_roles WHERE rolname = :'admin') \gexec
\endif
