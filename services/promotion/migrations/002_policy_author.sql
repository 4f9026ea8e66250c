-- Once: the author column of the policy table. The table now belongs to the policy package
-- (policy/migrations), which creates it with that column; this file stays so that installs
-- that applied it keep their numbering.
SELECT 1;
