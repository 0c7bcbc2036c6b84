<?php
// Signs a webhook the way the platform (Cryptomus, Heleket) does, in PHP itself: the payload
// without `sign` as json_encode($data, JSON_UNESCAPED_UNICODE) writes it, base64, the API key
// appended, md5 (CryptomusCom/api-php-sdk src/RequestBuilder.php; Heleket/php-sdk
// src/Signature/Signer.php and src/Webhook/WebhookVerifier.php); then sends the whole payload,
// `sign` last, as json_encode writes it (compact, `\/` in URLs).
// Usage: php make_signed.php API_KEY UNSIGNED.json > SIGNED.json
$data = json_decode(file_get_contents($argv[2]), true);
unset($data['sign']);
$data['sign'] = md5(base64_encode(json_encode($data, JSON_UNESCAPED_UNICODE)) . $argv[1]);
echo json_encode($data, JSON_UNESCAPED_UNICODE);
