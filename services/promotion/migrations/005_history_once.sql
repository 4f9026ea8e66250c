-- A deployment is kept in the history once, however often its deployer reported it: a report
-- sent again after a crash (the same promotion, perhaps under another event id) is the same
-- deployment. Rows recorded twice before this key existed go first (the earliest is kept);
-- rows without a promotion id (carried over from the ledger by 003) are left as they are.
DELETE FROM deployment_history later
 USING deployment_history earlier
 WHERE later.promotion_id = earlier.promotion_id
   AND later.environment = earlier.environment
   AND later.service = earlier.service
   AND later.version = earlier.version
   AND later.digest = earlier.digest
   AND later.id > earlier.id;
ALTER TABLE deployment_history
    ADD CONSTRAINT deployment_history_once
    UNIQUE (promotion_id, environment, service, version, digest);
