-- Promotion now continues a gate decision's trace through the runtime's trace threads (the
-- bus's trace_threads: HandlerContext.remember, .continuing), keyed by the decision's subject
-- ('<service>@<version>:<environment>'). What was kept here carries over; candidates.traceparent
-- is neither written nor read any more (left in place for instances of the previous version
-- during an upgrade).
INSERT INTO trace_threads (key, traceparent)
    SELECT service || '@' || version || ':' || environment, traceparent FROM candidates
     WHERE traceparent IS NOT NULL
    ON CONFLICT (key) DO UPDATE SET traceparent = EXCLUDED.traceparent;
COMMENT ON COLUMN candidates.traceparent IS 'unused: see trace_threads';
