-- Trace threads: where later work about a subject continues its trace. A build's soak running
-- out, a window opening for a candidate: work that something else sets off, but that belongs
-- to the trace of the subject it is about. The runtime keeps them for every service
-- (HandlerContext.remember, .remember_link, .continuing), so no service keeps traceparents in
-- tables of its own.
CREATE TABLE trace_threads (
    key          text PRIMARY KEY,              -- the subject, e.g. 'checkout@1.4.2'
    traceparent  text,                          -- the span later work continues (NULL: links only)
    tracestate   text,
    links        text[] NOT NULL DEFAULT '{}',  -- traceparents later work links to (fan-in)
    updated_at   timestamptz NOT NULL DEFAULT now()
);
