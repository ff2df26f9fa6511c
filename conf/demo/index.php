<?php
// mpm-itk demo: says which Unix user this request runs as, and which of the
// demo sites' files that user can read. Installed by run-demo into every
// document root under /srv/mpm-itk-demo.
header('Content-Type: text/plain; charset=utf-8');

function user_name(int $uid): string {
    $pw = posix_getpwuid($uid);
    return $pw ? $pw['name'] : '?';
}
function group_name(int $gid): string {
    $gr = posix_getgrgid($gid);
    return $gr ? $gr['name'] : '?';
}

$uid = posix_geteuid();
$gid = posix_getegid();
$groups = array_map(fn($g) => group_name($g) . "($g)", posix_getgroups());

printf("vhost:  %s\n", $_SERVER['SERVER_NAME'] ?? '?');
printf("user:   %s (uid %d)\n", user_name($uid), $uid);
printf("group:  %s (gid %d)\n", group_name($gid), $gid);
printf("groups: %s\n", $groups ? implode(' ', $groups) : '(none)');
printf("pid:    %d\n", getmypid());

echo "\nreadable by this user:\n";
$root = dirname(__DIR__);
foreach (['alice', 'bob', 'default'] as $site) {
    $file = "$root/$site/index.php";
    printf("  %-40s %s\n", $file, is_readable($file) ? 'yes' : 'no');
}
