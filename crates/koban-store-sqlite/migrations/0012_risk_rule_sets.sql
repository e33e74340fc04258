-- Every rule set an operator put in force (a reload through the API or SIGHUP), newest last:
-- each instance polls the newest and takes it, so a reload on one reaches all of them. The
-- source is kept whole, so any decision's digest names the exact text it was made under.
CREATE TABLE risk_rule_sets (
    version    INTEGER PRIMARY KEY,
    digest     TEXT NOT NULL,
    source     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
