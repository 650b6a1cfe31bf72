BEGIN TRANSACTION;
CREATE TABLE queues (
	id TEXT NOT NULL, 
	dataset TEXT NOT NULL, 
	checkpoint TEXT NOT NULL, 
	spec TEXT NOT NULL, 
	created_by TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "queues" VALUES('qq','ds','ck1','{"size": 30, "seed": 0}','alice','2026-12-03 15:55:27.849836');
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO "schema_version" VALUES(1,'2026-12-03 15:55:27.771662');
CREATE TABLE verdicts (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	dataset TEXT NOT NULL, 
	checkpoint TEXT NOT NULL, 
	checkpoint_name TEXT NOT NULL, 
	query_id TEXT NOT NULL, 
	direction TEXT NOT NULL, 
	verdict TEXT NOT NULL, 
	note TEXT NOT NULL, 
	reviewer TEXT NOT NULL, 
	queue_id TEXT, 
	created_at DATETIME NOT NULL
);
INSERT INTO "verdicts" VALUES(1,'ds','ck1','epoch 1','q1','i2t','label noise','kept since version 1','alice','qq','2026-12-03 15:55:27.820845');
CREATE INDEX verdicts_by_checkpoint ON verdicts (dataset, checkpoint);
CREATE INDEX verdicts_by_query ON verdicts (dataset, query_id, direction);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('verdicts',1);
COMMIT;
