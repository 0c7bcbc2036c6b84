<?php
// Recomputes vectors.json's `php` entries with PHP itself, as NOWPayments' docs' PHP example
// checks an IPN: json_decode(..., true), tksort (ksort at every level), json_encode with
// JSON_UNESCAPED_SLASHES, hash_hmac('sha512', ..., trim(secret)).
// Usage: php make_vectors.php SECRET FILE...
function tksort(&$a) { ksort($a); foreach (array_keys($a) as $k) { if (is_array($a[$k])) { tksort($a[$k]); } } }
$secret = $argv[1];
foreach (array_slice($argv, 2) as $file) {
    $data = json_decode(file_get_contents($file), true);
    tksort($data);
    $form = json_encode($data, JSON_UNESCAPED_SLASHES);
    echo json_encode(['file' => $file, 'php_form' => $form, 'php_signature' => hash_hmac('sha512', $form, trim($secret))], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
}
