-- Large payloads (inventory documents of tens of kilobytes) are compressed when TOASTed. With
-- PostgreSQL's default, pglz, compressing them was the largest single cost of storing an inventory
-- report in the database; lz4 compresses (and decompresses, for the diff reactor and as-of reads)
-- several times faster at a similar ratio for JSON. Rows already stored keep their compression;
-- both read back the same.
ALTER TABLE events ALTER COLUMN payload SET COMPRESSION lz4;
