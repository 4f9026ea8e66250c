-- The same policy table as the gates service's (shared.release_model.in_force reads both).
ALTER TABLE policy ADD COLUMN updated_by text;
