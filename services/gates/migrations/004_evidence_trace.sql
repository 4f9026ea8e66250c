-- A gate decision links the spans of the evidence it used.
ALTER TABLE evidence ADD COLUMN traceparent text;
