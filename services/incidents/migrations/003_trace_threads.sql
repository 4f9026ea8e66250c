-- An incident now joins, and its work continues, the trace of the release it is about
-- through the runtime's trace threads (the bus's trace_threads: HandlerContext.remember,
-- .continuing), keyed 'deploy:<service>@<version>:<environment>' (the newest report of that
-- deployment) and 'incident:<id>'. What was kept here carries over; deployments.traceparent
-- and incidents.traceparent are neither written nor read any more (left in place for
-- instances of the previous version during an upgrade).
INSERT INTO trace_threads (key, traceparent)
    SELECT DISTINCT ON (service, version, environment)
           'deploy:' || service || '@' || version || ':' || environment, traceparent
      FROM deployments WHERE traceparent IS NOT NULL
     ORDER BY service, version, environment, deployed_at DESC, id DESC
    ON CONFLICT (key) DO UPDATE SET traceparent = EXCLUDED.traceparent;
INSERT INTO trace_threads (key, traceparent)
    SELECT 'incident:' || id, traceparent FROM incidents WHERE traceparent IS NOT NULL
    ON CONFLICT (key) DO UPDATE SET traceparent = EXCLUDED.traceparent;
COMMENT ON COLUMN deployments.traceparent IS 'unused: see trace_threads';
COMMENT ON COLUMN incidents.traceparent IS 'unused: see trace_threads';
