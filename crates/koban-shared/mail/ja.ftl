# Kobanのお知らせメール(日本語)。各メッセージの値が件名、.body 属性が本文です。
# en.ftl と同じメッセージを持ちます(単体テストで確認)。引数は書式済みで渡されます。

-not-me = お心当たりがない場合は、Kobanウォレットのセキュリティセンターで「アカウントを凍結する」を選んでください。

verify-code = Koban 確認コード
    .body = 確認コードは { $code } です。{ $minutes } 分間有効です。
signup-address-taken = あなたのメールアドレスで登録が試みられました
    .body = このメールアドレスでKobanアカウントの作成が試みられましたが、このアドレスにはすでにアカウントがあります。ご本人の場合はログインするか、パスワードを再設定してください。お心当たりがなければ、対応は不要です。
recovery-code-used = リカバリーコードが使われました
    .body = Kobanアカウントへのログインまたは操作の確認に、リカバリーコードが使われました。残りは { $left } 個です。{ -not-me }
account-locked = Kobanアカウントがロックされました
    .body = ログインまたは2段階認証の確認に { $failures } 回失敗したため、アカウントを { $minutes } 分間ロックしました。お心当たりがない場合、パスワードが第三者に知られている可能性があります。ロックが解除されたらパスワードを変更してください。
account-changed = Kobanアカウント: { $what }
    .body =
        { $what }。

        ご本人による操作であれば、対応は不要です。今後 { $hours } 時間は、ウォレットから出金できる金額が制限されます。

        お心当たりがない場合は、次のリンクを開いてください。アカウントが凍結され、すべての端末がログアウトされます:
        { $link }
change-recovery-codes = リカバリーコードが再発行されました
change-factor-removed = 2段階認証の方法が削除されました
change-totp-added = 認証アプリが追加されました
change-passkey-added = パスキーが追加されました
change-email = メールアドレスが { $address } に変更されました
change-phone = 電話番号が変更されました
change-password = パスワードが変更されました
change-password-reset = パスワードが再設定されました
change-recovery-approved = アカウント復旧の申請が承認されました。パスワードでログインし、新しい認証アプリを設定してください
frozen-sign-in = 凍結中のKobanアカウントへのログイン
    .body = あなたのパスワードでログインがありましたが、アカウントは凍結中のため、何も許可していません。凍結の解除はサポートにお問い合わせください。お心当たりがない場合、パスワードが第三者に知られています。
new-sign-in = Kobanアカウントへの新しいログイン
    .body = 新しい端末またはブラウザ({ $device }、ネットワーク { $network })からログインがありました。お心当たりがない場合は、すぐにパスワードを変更し、セキュリティセンターでログイン中の端末を確認してください。
factor-on = 2段階認証を有効にしました
    .body = Kobanアカウントは2段階認証で保護されるようになりました。リカバリーコードは安全な場所に保管してください。
email-confirm-code = Kobanの新しいメールアドレスの確認
    .body = 確認コードは { $code } です。{ $minutes } 分間有効です。
email-now-yours = このアドレスがKobanのメールアドレスになりました
    .body = Kobanアカウントは今後このメールアドレスを使います。
frozen-by-owner = Kobanアカウントを凍結しました
    .body = 身に覚えのない操作があるとのご連絡を受け、アカウントを凍結し、すべての端末をログアウトしました。再び使うには、サポートにお問い合わせいただくか、アカウント復旧を申請してください。
password-reset-code = Kobanパスワードの再設定
    .body = パスワード再設定コードは { $code } です。認証アプリまたはリカバリーコードも必要です。お心当たりがなければ、このメールは無視してください。
recovery-requested = Kobanアカウントの復旧が申請されました
    .body = 2段階認証なしでアカウントを復旧する申請がありました。{ $hours } 時間後に担当者が審査します。お心当たりがない場合は、今すぐ取り消してください: { $link }
api-key-created = Koban APIキーが作成されました
    .body = 加盟店アカウントにAPIキー「{ $name }」({ $environment })が作成されました。お心当たりがない場合は、すぐに無効にしてパスワードを変更してください。
bank-linking = 銀行口座の登録が始まりました
    .body = Kobanアカウントにログインした誰かが、銀行口座 { $account } の登録を始めました。その口座に少額の入金を2回行いました。ウォレットで金額を入力すると登録が完了します。{ -not-me }
bank-linked = 銀行口座を登録しました
    .body = 銀行口座 { $account } をKobanウォレットに登録しました。最初の72時間は、この口座からのチャージが制限されます。{ -not-me }
topup-received = チャージが完了しました
    .body = { $amount } のチャージがウォレットに入金されました。
topup-failed = チャージに失敗しました
    .body = { $amount } のチャージは銀行で失敗しました。お金は引き落とされていません。
payout-sent = 出金しました
    .body = { $amount } を銀行口座 { $account } に出金しました。
payout-failed = 出金に失敗しました
    .body = { $amount } の出金は銀行で失敗しました。お金は残高に戻っています。
card-added = カードが追加されました
    .body = 末尾 { $last4 } のカードがKobanウォレットに追加されました。{ -not-me }
card-issuer-code = カード発行会社の確認コード(サンドボックス)
    .body = 末尾 { $last4 } のカードからの { $amount } のチャージを確認するには、{ $code } を入力してください。10分間有効です。お心当たりがない場合は入力せず、セキュリティセンターでアカウントを凍結してください。
money-returned = ウォレットに返金しました
    .body = 不正と判断した { $amount } の送金を、ウォレットに戻しました。
money-compensated = ウォレットに返金しました
    .body = 不正による損失の補償として、{ $amount } をウォレットに入金しました。
card-issued = 新しいカードを発行しました
    .body = カード「{ $name }」({ $masked })を発行しました。ウォレットで有効にするまでは使えません。{ -not-me }
card-activation-letter = カード有効化のお知らせ(サンドボックスの郵便)
    .body = カード { $masked } の有効化コードは { $code } です。ウォレットで入力するとカードが有効になります。
card-activated = カードを有効にしました
    .body = カード { $masked } を有効にしました。お心当たりがない場合は、ウォレットでカードを凍結し、セキュリティセンターでアカウントを凍結してください。
card-shown = カード情報が表示されました
    .body = ウォレットでカード { $masked } の全情報が表示されました。お心当たりがない場合は、ウォレットでカードを凍結し、セキュリティセンターでアカウントを凍結してください。
held-released = 保留中の送金について
    .body = { $amount } の送金は確認が終わり、送金されました。
held-stopped = 保留中の送金について
    .body = { $amount } の送金は確認の結果、止めました。お金はウォレットに戻っています。ご自身の送金でない場合は、すぐにパスワードを変更してください。
kyc-approved = 本人確認の結果
    .body = 本人確認が完了しました。ウォレットの上限が引き上げられ、ご本人名義の銀行口座を登録できます。
kyc-rejected = 本人確認の結果
    .body = ご提出の情報では本人確認ができませんでした。もう一度提出できます。
merchant-paid = お店に支払いました
    .body = { $merchant } に { $amount } を支払いました。
merchant-paid-code = お店に支払いました
    .body = 支払いコードで { $merchant } に { $amount } を支払いました。
merchant-refund = 返金を受け取りました
    .body = お店から { $amount } がウォレットに返金されました。
card-payment = カードの利用
    .body = 末尾 { $last4 } のカードが { $merchant } で { $amount } 利用されました。
card-refund = カードの返金
    .body = { $merchant } から { $amount } がウォレットに返金されました。
transfer-held = 送金を確認しています
    .body = { $payee } への { $amount } の送金は、短い確認のため保留しています。お金はウォレットで確保されたままです。送金されたらお知らせします。{ -not-me }
money-sent = 送金しました
    .body = { $payee } に { $amount } を送金しました。{ -not-me }
money-received = お金を受け取りました
    .body = { $payer } から { $amount } を受け取りました。
sessions-ended = Kobanのほかの端末をログアウトしました
    .body =
        セキュリティセンターから、1台を除くすべての端末をKobanアカウントからログアウトしました。

        お心当たりがない場合は、次のリンクを開いてください。アカウントが凍結され、すべての端末がログアウトされます:
        { $link }
