-- Frees the table groups.sql made once observed.sql and records.sql have read it.
DROP TABLE IF EXISTS tf_recommend_groups;
