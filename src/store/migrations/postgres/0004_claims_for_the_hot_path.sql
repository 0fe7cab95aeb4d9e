-- Nothing changes on PostgreSQL: several gateways share the claims' leases
-- through this table, and claims_until serves their expiry. (SQLite reshaped
-- its claims table in this version; the numbering stays the same in both.)
SELECT 1;
