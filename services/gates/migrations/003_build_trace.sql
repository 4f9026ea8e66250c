-- Decisions set off by something else (an approval, a soak running out) join the build's trace.
ALTER TABLE builds ADD COLUMN traceparent text;
