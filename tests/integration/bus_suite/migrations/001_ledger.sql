-- The bus suite's ledger service (tests/integration/bus_suite/cases.py): a row per event.
CREATE TABLE ledger (id text PRIMARY KEY, service text NOT NULL, version text NOT NULL, n bigserial);
