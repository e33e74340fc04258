# Koban's notice e-mails in English: each message is the subject, its .body attribute the text.
# Every message here has its twin in ja.ftl (a unit test checks). Arguments arrive formatted.

-not-me = If this was not you, open the security centre of your Koban wallet and choose "Freeze my account".

verify-code = Your Koban verification code
    .body = Your verification code is { $code }. It is good for { $minutes } minutes.
signup-address-taken = Someone tried to sign up with your address
    .body = Someone tried to open a Koban account with this e-mail address, which already has one. If it was you, sign in, or reset your password. If not, you need not do anything.
recovery-code-used = A recovery code was used
    .body = A recovery code was used to confirm a sign-in or an action on your Koban account. You have { $left } left. { -not-me }
account-locked = Your Koban account is locked
    .body = There were { $failures } failed attempts to sign in to your account or confirm it with a second factor, so it is locked for { $minutes } minutes. If this was not you, your password may be known to someone else: change it after the lock ends.
account-changed = Your Koban account: { $what }
    .body =
        { $what }.

        If this was you, there is nothing to do. For the next { $hours } hours, less money can leave your wallet.

        If this was NOT you, open this link: it freezes the account and signs everyone out:
        { $link }
change-recovery-codes = your recovery codes were replaced
change-factor-removed = a second factor was removed
change-totp-added = a new authenticator app was added
change-passkey-added = a new passkey was added
change-email = your e-mail address was changed to { $address }
change-phone = your phone number was changed
change-password = your password was changed
change-password-reset = your password was reset
change-recovery-approved = your recovery request was approved: sign in with your password and set up a new authenticator
frozen-sign-in = Sign-in to a frozen Koban account
    .body = Someone signed in with your password, but the account is frozen, so nothing was allowed. Contact support to unfreeze it; if it was not you, your password is known to someone else.
new-sign-in = New sign-in to your Koban account
    .body = Your account was signed in to from a new device or browser ({ $device }, network { $network }). If this was not you, change your password and review your sessions in the security centre now.
factor-on = Two-step sign-in is on
    .body = A second factor now protects your Koban account. Keep your recovery codes somewhere safe.
email-confirm-code = Confirm your new Koban e-mail address
    .body = Your confirmation code is { $code }. It is good for { $minutes } minutes.
email-now-yours = This is now your Koban e-mail address
    .body = Your Koban account now uses this address.
account-closed = Your Koban account is closed
    .body = Your Koban account is closed and every session has ended. What the law asks us to keep (your payments' records) is kept under a number, not your name, until its period ends; then your personal data is erased. If you did not close it, contact support at once.
frozen-by-owner = Your Koban account is frozen
    .body = You told us something on your account was not done by you. The account is frozen and every session has ended. Contact support, or file a recovery request, to get back in.
password-reset-code = Reset your Koban password
    .body = Your password reset code is { $code }. You will also need your authenticator app or a recovery code. If you did not ask for this, ignore this message.
recovery-requested = A recovery request was filed for your Koban account
    .body = Someone asked to recover your account without its second factor. Staff will review it after { $hours } hours. If this was not you, cancel it now: { $link }
operator-invited = You are invited to operate Koban
    .body = An administrator invited you to Koban's operations console as { $role }. Choose your password with this link within 72 hours; at your first sign-in you set up an authenticator app: { $link }
api-key-created = A Koban API key was created
    .body = An API key "{ $name }" ({ $environment }) was created for your merchant account. If this was not you, revoke it at once and change your password.
bank-linking = A bank account is being linked
    .body = Someone signed in to your Koban account started linking bank account { $account } to it. Two small deposits were sent to that account; enter them in your wallet to finish. { -not-me }
bank-linked = A bank account was linked
    .body = Bank account { $account } is now linked to your Koban wallet. For the first 72 hours, top-ups from it are limited. { -not-me }
topup-received = Top-up received
    .body = Your top-up of { $amount } has arrived in your wallet.
topup-failed = Top-up failed
    .body = Your top-up of { $amount } failed at the bank; nothing was taken.
payout-sent = Payout sent
    .body = { $amount } was paid out to bank account { $account }.
payout-failed = Payout failed
    .body = The payout of { $amount } failed at the bank; the money is back in your balance.
card-added = A card was added
    .body = A card ending in { $last4 } was added to your Koban wallet. { -not-me }
card-issuer-code = Your card issuer's confirmation code (sandbox)
    .body = To confirm a top-up of { $amount } from your card ending in { $last4 }, enter { $code }. It is valid for 10 minutes. If you did not ask for this, do not enter it, and freeze your account in the security centre.
money-returned = Money returned to your wallet
    .body = A transfer of { $amount } that we found to be fraudulent was returned to your wallet.
money-compensated = Money returned to your wallet
    .body = We credited { $amount } to your wallet to make good a loss from fraud.
card-issued = A new card was issued
    .body = Your card "{ $name }" ({ $masked }) was issued. It stays inactive until you activate it in your wallet. { -not-me }
card-activation-letter = Your card activation letter (sandbox post)
    .body = The activation code for your card { $masked } is { $code }. Enter it in your wallet to activate the card.
card-activated = Your card was activated
    .body = Your card { $masked } was activated. If this was not you, freeze the card in your wallet and your account in the security centre.
card-shown = Your card details were shown
    .body = The full details of your card { $masked } were shown in your wallet. If this was not you, freeze the card in your wallet and your account in the security centre.
held-released = Your held transfer
    .body = Your transfer of { $amount } was reviewed and has gone through.
held-stopped = Your held transfer
    .body = Your transfer of { $amount } was stopped after review; the money is back in your wallet. If you did not make it, change your password now.
kyc-approved = Your identity check
    .body = Your identity is verified: higher wallet limits apply now, and you can link a bank account in your own name.
kyc-rejected = Your identity check
    .body = We could not verify your identity with the details given. You can submit them again.
merchant-paid = You paid a merchant
    .body = You paid { $amount } to { $merchant }.
merchant-paid-code = You paid a merchant
    .body = You paid { $amount } to { $merchant } with a payment code.
merchant-refund = You received a refund
    .body = A merchant refunded { $amount } to your wallet.
card-payment = Card payment
    .body = Your card ending in { $last4 } was used for { $amount } at { $merchant }.
card-refund = Card refund
    .body = { $merchant } refunded { $amount } to your wallet.
transfer-held = Your transfer is being reviewed
    .body = Your transfer of { $amount } to { $payee } is held for a short review. The money stays reserved in your wallet; we will tell you when it goes through. { -not-me }
money-sent = You sent money
    .body = You sent { $amount } to { $payee }. { -not-me }
money-received = You received money
    .body = You received { $amount } from { $payer }.
sessions-ended = Your other devices were signed out of Koban
    .body =
        Every device but one was signed out of your Koban account, from the security centre.

        If this was NOT you, open this link: it freezes the account and signs everyone out:
        { $link }
