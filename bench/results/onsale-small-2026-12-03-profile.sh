#!/bin/bash
# Wait for a sale's server, then profile its workers for 60 s from the opening.
cd /work/main
(timeout 900 .venv/bin/python -m bench.onsale --no-compare --customers 60000 --seats 15000 > /tmp/spy-sale.txt 2>&1) &
sale=$!
# the opening: the progress line with t=-1s
until grep -q "t=-1s" /tmp/spy-sale.txt 2>/dev/null; do sleep 0.5; done
parent=$(pgrep -f "boxoffice serve" | head -1)
workers=$(pgrep -P $parent | tr '\n' ' ')
echo "parent $parent workers $workers" > /tmp/spy-pids.txt
for w in $workers; do
  .venv/bin/py-spy record --pid $w --duration 60 --rate 40 --nonblocking --format raw --output /tmp/spy-$w.txt > /dev/null 2>&1 &
done
wait $sale
