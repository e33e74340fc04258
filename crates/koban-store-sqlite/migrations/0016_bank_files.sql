-- The ISO 20022 file bank (koban-pay `connectors.rs`, `statements.rs`).

-- A top-up's or payout's reference: what a customer's transfer quotes for a top-up, the
-- end-to-end id of a payout; NULL for the sandbox bank and card top-ups.
ALTER TABLE bank_operations ADD COLUMN reference TEXT;
CREATE UNIQUE INDEX bank_operations_reference ON bank_operations (reference);

-- Credit transfers for the next pain.001 file: payouts and micro-deposits.
CREATE TABLE bank_instructions (
    end_to_end_id TEXT PRIMARY KEY,    -- quoted back by the statement line that books it
    kind TEXT NOT NULL,                -- payout | micro_deposit
    source_id TEXT,                    -- funding_sources.id of a micro-deposit
    operation_id BLOB,                 -- bank_operations.id of a payout
    account TEXT NOT NULL,             -- the creditor's account, 0001-123-1234567
    holder_name TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    file_id TEXT,                      -- the pain.001 it went out in; NULL until then
    created_at BIGINT NOT NULL
);
CREATE INDEX bank_instructions_unsent ON bank_instructions (file_id, created_at);

-- The pain.001 files made, kept so a file lost on its way to the bank can be written again.
CREATE TABLE bank_files (
    id TEXT PRIMARY KEY,               -- the message id
    content TEXT NOT NULL,
    transactions BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    written_at BIGINT                  -- when it was written to the outbox folder
);

-- Every line of every statement imported, and what it settled; unmatched lines wait for an
-- operator.
CREATE TABLE bank_statement_lines (
    id TEXT PRIMARY KEY,               -- a digest of account, day, direction, money and the bank's reference
    bank_reference TEXT,               -- the bank's own reference for the line
    message_id TEXT NOT NULL,          -- the camt file it came in first
    direction TEXT NOT NULL,           -- credit | debit
    reversal BIGINT NOT NULL,          -- 1: a reversal or return of an earlier movement
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    booked_on TEXT,
    reference TEXT,                    -- the end-to-end id or remittance text it carried
    counterparty TEXT,
    state TEXT NOT NULL,               -- matched | unmatched | resolved (unmatched 'settling' while it settles)
    reason TEXT,                       -- why it is unmatched
    operation_id BLOB,                 -- the top-up or payout it settled
    note TEXT,                         -- the operator's, when resolved
    resolved_by TEXT,
    resolved_at BIGINT,
    imported_at BIGINT NOT NULL
);
CREATE INDEX bank_statement_lines_state ON bank_statement_lines (state, imported_at);
