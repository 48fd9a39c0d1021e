# crash.gp - experiment 3: latency of every client request over time, kills and restarts marked,
# a p99-per-second line, and the leader over time in a panel below.
# Call with -e "run='1'"; inputs crash<run>_latency.csv.gz (t_s,type,latency_ms,status),
# crash<run>_p99.csv (t_s,p99_ms,requests), crash<run>_leader.csv (t_s,leader,epoch),
# crash<run>_queries.csv and crash<run>_marks.gp (kill and ready lines, drawn behind the points).
set datafile separator ","
set datafile missing "NaN"
set terminal pngcairo size 1400,760 font "Sans,11"
set output "crash".run.".png"
set multiplot
set lmargin at screen 0.07
set rmargin at screen 0.97
# top: latency
set tmargin at screen 0.84
set bmargin at screen 0.36
load "crash".run."_marks.gp"
set logscale y
set format x ""
set ylabel "request latency (ms, log)"
set label 100 "Run ".run.": 5 sessions, p = 0.5; SIGKILL (red line) and replica ready again (green dashed)" at screen 0.52, screen 0.975 center
set grid
set key at screen 0.52, screen 0.945 center top horizontal maxrows 2 samplen 2
set xrange [0:*]
f = "< gzip -dc crash".run."_latency.csv.gz"
ok(s) = (s == 200 || s == 409)
plot f using (strcol(2) eq "lookup" && ok($4) ? $1 : 1/0):3 skip 1 with points pt 7 ps 0.25 lc rgb "#6baed6" title "lookup", \
     f using (strcol(2) eq "trade" && ok($4) ? $1 : 1/0):3 skip 1 with points pt 7 ps 0.35 lc rgb "#ff7f0e" title "trade", \
     f using (strcol(2) eq "query" && ok($4) ? $1 : 1/0):3 skip 1 with points pt 7 ps 0.35 lc rgb "#2ca02c" title "order query (client verification)", \
     "crash".run."_queries.csv" using 1:4 skip 1 with points pt 6 ps 0.6 lc rgb "#9467bd" title "order query during the run (prober)", \
     f using (!ok($4) ? $1 : 1/0):3 skip 1 with points pt 2 ps 1.5 lw 2 lc rgb "#000000" title "failed attempt (retried)", \
     "crash".run."_p99.csv" using 1:2 skip 1 with lines lw 2.5 lc rgb "#8c564b" title "p99 per second (lookups and trades)"
unset label
unset logscale y
# bottom: leader over time
set tmargin at screen 0.32
set bmargin at screen 0.07
set format x "%g"
set xlabel "time since client start (s)"
set ylabel "leader (replica id)"
set yrange [0.5:3.5]
set ytics 1
unset key
plot "crash".run."_leader.csv" using 1:2 skip 1 with steps lw 2.5 lc rgb "#1f77b4" notitle, \
     "" using 1:2 skip 1 with points pt 7 ps 0.4 lc rgb "#1f77b4" notitle
unset multiplot
