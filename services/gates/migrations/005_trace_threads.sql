-- Decisions now continue a build's trace, and link its evidence, through the runtime's trace
-- threads (the bus's trace_threads: HandlerContext.remember, .remember_link, .continuing). What
-- was kept here carries over; builds.traceparent and evidence.traceparent are neither written
-- nor read any more (left in place for instances of the previous version during an upgrade).
INSERT INTO trace_threads (key, traceparent)
    SELECT service || '@' || version, traceparent FROM builds WHERE traceparent IS NOT NULL
    ON CONFLICT (key) DO UPDATE SET traceparent = EXCLUDED.traceparent;
INSERT INTO trace_threads (key, links)
    SELECT service || '@' || version, array_agg(traceparent ORDER BY recorded_at, event_id)
      FROM evidence WHERE traceparent IS NOT NULL GROUP BY service, version
    ON CONFLICT (key) DO UPDATE SET links = EXCLUDED.links;
COMMENT ON COLUMN builds.traceparent IS 'unused: see trace_threads';
COMMENT ON COLUMN evidence.traceparent IS 'unused: see trace_threads';
