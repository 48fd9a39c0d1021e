# latency.gp - experiment 1 plots from latency.csv (run in docs/eval by bench/eval/eval.py).
# Columns: p, then for lookup, trade, query and cache on, off:
#   mean, mean_lo, mean_hi, p99, p99_lo, p99_hi (min/max over repetitions); hitrate_on, hitrate_off.
set datafile separator ","
set datafile missing "NaN"
set key autotitle columnhead
set terminal pngcairo size 1500,480 font "Sans,11"
set grid
set xrange [-0.08:0.88]
set xtics 0,0.2,0.8
set xlabel "trade probability p"
set key bottom right
on = "#1f77b4"; off = "#d62728"
base(kind) = 2 + 12*kind      # kind 0 lookup, 1 trade, 2 query
titles = "lookup trade query"

set output "latency_mean.png"
set multiplot layout 1,3 title "Mean latency per request (5 sessions, 3 replicas); bars: min-max of repetition means"
do for [k=0:2] {
  set title word(titles, k+1)
  set ylabel "mean latency (ms)"
  set yrange [0:*]
  plot "latency.csv" using ($1-0.01):base(k):base(k)+1:base(k)+2 with yerrorlines lc rgb on lw 2 pt 7 title "cache on", \
       ""            using ($1+0.01):base(k)+6:base(k)+7:base(k)+8 with yerrorlines lc rgb off lw 2 pt 5 title "cache off"
}
unset multiplot

set output "latency_p99.png"
set multiplot layout 1,3 title "p99 latency per request; bars: min-max of repetition p99s"
do for [k=0:2] {
  set title word(titles, k+1)
  set ylabel "p99 latency (ms)"
  set yrange [0:*]
  plot "latency.csv" using ($1-0.01):base(k)+3:base(k)+4:base(k)+5 with yerrorlines lc rgb on lw 2 pt 7 title "cache on", \
       ""            using ($1+0.01):base(k)+9:base(k)+10:base(k)+11 with yerrorlines lc rgb off lw 2 pt 5 title "cache off"
}
unset multiplot

set terminal pngcairo size 800,480 font "Sans,11"
set output "hitrate.png"
set title "Cache hit rate, and lookup latency with the cache as a share of without, vs p"
set ylabel "percent"
set yrange [0:105]
set key bottom left
plot "latency.csv" using 1:($38*100) with linespoints lw 2 pt 7 lc rgb on title "hit rate (cache on), %", \
     ""            using 1:($2/$8*100) with linespoints lw 2 pt 5 lc rgb "#2ca02c" title "mean lookup latency, cache on as % of cache off"
