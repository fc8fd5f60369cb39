#!/bin/sh
# Sums the second column of every CSV in data/ into out/report.txt.
set -eu
mkdir -p out
awk -F, 'FNR > 1 { total += $2 } END { print "total", total }' data/*.csv > out/report.txt
cat out/report.txt
