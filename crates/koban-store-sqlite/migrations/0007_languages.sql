-- The language an account reads its notice e-mails in ('en' or 'ja'): set at sign-up from
-- the language of the page or the request, changed with the language switch.
ALTER TABLE users ADD COLUMN lang TEXT NOT NULL DEFAULT 'en' CHECK (lang IN ('en', 'ja'));
