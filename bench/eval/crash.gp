# crash.gp - experiment 3: latency of every client request over time, kills and restarts marked.
# Call with -e "run='1'"; inputs crash<run>_latency.csv (t_s,type,latency_ms,status) and
# crash<run>_marks.gp (arrows and labels).
set datafile separator ","
set terminal pngcairo size 1400,560 font "Sans,11"
set output "crash".run.".png"
load "crash".run."_marks.gp"
set logscale y
set xlabel "time since client start (s)"
set ylabel "request latency (ms, log)"
set title "Run ".run.": 5 sessions, p = 0.5; SIGKILL (red) and replica ready again (green dashed)" offset 0,1.2
set grid
set key outside bottom center horizontal
set xrange [0:*]
f = "< gzip -dc crash".run."_latency.csv.gz"
ok(s) = (s == 200 || s == 409)
plot f using (strcol(2) eq "lookup" && ok($4) ? $1 : 1/0):3 skip 1 with points pt 7 ps 0.25 lc rgb "#9ecae1" title "lookup", \
     f using (strcol(2) eq "trade" && ok($4) ? $1 : 1/0):3 skip 1 with points pt 7 ps 0.35 lc rgb "#ff7f0e" title "trade", \
     f using (strcol(2) eq "query" && ok($4) ? $1 : 1/0):3 skip 1 with points pt 7 ps 0.35 lc rgb "#2ca02c" title "order query (client verification)", \
     "crash".run."_queries.csv" using 1:4 skip 1 with points pt 6 ps 0.6 lc rgb "#006400" title "order query during the run (prober)", \
     f using (!ok($4) ? $1 : 1/0):3 skip 1 with points pt 2 ps 1.5 lw 2 lc rgb "#000000" title "failed attempt (retried)"
