BEGIN TRANSACTION;
CREATE TABLE decisions (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	dataset TEXT NOT NULL, 
	baseline TEXT NOT NULL, 
	candidate TEXT NOT NULL, 
	baseline_name TEXT NOT NULL, 
	candidate_name TEXT NOT NULL, 
	decision TEXT NOT NULL, 
	override_reason TEXT NOT NULL, 
	deciders TEXT NOT NULL, 
	rationale TEXT NOT NULL, 
	rule_source TEXT NOT NULL, 
	rule_text TEXT NOT NULL, 
	rule_sha256 TEXT NOT NULL, 
	resamples INTEGER NOT NULL, 
	seed INTEGER NOT NULL, 
	gate TEXT NOT NULL, 
	rules TEXT NOT NULL, 
	review_counts TEXT NOT NULL, 
	code_version TEXT NOT NULL, 
	created_at DATETIME NOT NULL
);
INSERT INTO "decisions" VALUES(1,'ds','aaaaaaaaaaaaaaaa','bbbbbbbbbbbbbbbb','A','B','NO-GO','','ada, bob','regressions on Heels','r','[[rule]]','0000000000000000000000000000000000000000000000000000000000000000',10000,0,'NO-GO: a block rule fails','[{"rule": "MAP", "status": "fail"}]','{"label noise": 1}','0.1','2026-12-03 15:55:28.288892');
CREATE TABLE outcomes (
	id INTEGER NOT NULL, 
	dataset TEXT NOT NULL, 
	checkpoint TEXT NOT NULL, 
	checkpoint_name TEXT NOT NULL, 
	query_id TEXT NOT NULL, 
	direction TEXT NOT NULL, 
	ap FLOAT NOT NULL, 
	own_rank INTEGER NOT NULL, 
	mis_retrieved BOOLEAN NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT one_outcome_per_query UNIQUE (dataset, checkpoint, query_id, direction)
);
INSERT INTO "outcomes" VALUES(1,'ds','ck1','epoch 1','q1','i2t',0.25,3,1);
CREATE TABLE queues (
	id TEXT NOT NULL, 
	dataset TEXT NOT NULL, 
	checkpoint TEXT NOT NULL, 
	spec TEXT NOT NULL, 
	created_by TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "queues" VALUES('qq','ds','ck1','{"size": 30, "seed": 0}','alice','2026-12-03 15:55:28.243893');
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO "schema_version" VALUES(1,'2026-12-03 15:55:28.212710');
INSERT INTO "schema_version" VALUES(2,'2026-12-03 15:55:28.214707');
INSERT INTO "schema_version" VALUES(3,'2026-12-03 15:55:28.218374');
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
INSERT INTO "verdicts" VALUES(1,'ds','ck1','epoch 1','q1','i2t','label noise','kept since version 3','alice','qq','2026-12-03 15:55:28.236838');
CREATE INDEX verdicts_by_checkpoint ON verdicts (dataset, checkpoint);
CREATE INDEX verdicts_by_query ON verdicts (dataset, query_id, direction);
CREATE INDEX decisions_by_pair ON decisions (dataset, baseline, candidate);
CREATE TRIGGER verdicts_no_update BEFORE UPDATE ON verdicts BEGIN SELECT RAISE(ABORT, 'verdicts are append-only: add a new row instead'); END;
CREATE TRIGGER verdicts_no_delete BEFORE DELETE ON verdicts BEGIN SELECT RAISE(ABORT, 'verdicts are append-only: add a new row instead'); END;
CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions BEGIN SELECT RAISE(ABORT, 'decisions are append-only: add a new row instead'); END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions BEGIN SELECT RAISE(ABORT, 'decisions are append-only: add a new row instead'); END;
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('verdicts',1);
INSERT INTO "sqlite_sequence" VALUES('decisions',1);
COMMIT;
