-- Claims are expired in the order they were written (rowid order), which is
-- the order of their times: the claims_until index cost a b-tree insert per
-- settled push and a page per commit. Leases of claims being sent are no
-- longer written (the gateway keeps them); rows here are settled claims, and
-- leases an older version wrote.
DROP INDEX IF EXISTS claims_until;
