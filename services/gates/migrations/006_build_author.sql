-- Who made a build's change, as CI said (artifact.published's author): a four-eyes gate does
-- not count that person's approval. Null: CI did not say.
ALTER TABLE builds ADD COLUMN author text;
