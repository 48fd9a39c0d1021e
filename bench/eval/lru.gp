# lru.gp - experiment 2: which stocks are cached over time, and cumulative cache counters.
# Inputs (in docs/eval): lru_timeline.csv (t_s,stock_index,stock,lru_rank),
# lru_counters.csv (t_s,hits,misses,evictions,invalidations,entries), lru_stocks.gp (ytics, phase marks).
set datafile separator ","
set terminal pngcairo size 1400,900 font "Sans,11"
set output "lru_timeline.png"
set multiplot
set lmargin at screen 0.12
set rmargin at screen 0.90
# top panel
set origin 0,0.40
set size 1,0.58
set tmargin at screen 0.93
set bmargin at screen 0.45
load "lru_stocks.gp"
set xrange [0:*]
set format x ""
set grid xtics
# Four discrete, distinguishable colours, one per LRU position.
set palette maxcolors 4
set palette defined (0 "#1b9e77", 1 "#d95f02", 2 "#7570b3", 3 "#e7298a")
set cbrange [0.5:4.5]
set cbtics 1
set cblabel "LRU position (1 = most recent)"
set colorbox user origin screen 0.92, screen 0.5 size screen 0.015, screen 0.38
set title "Cached stocks over time (cache\\_size = 4, 12 stocks; /status every 100 ms)" offset 0,1.2
plot "lru_timeline.csv" using 1:2:4 skip 1 with points pt 5 ps 0.55 lc palette notitle
unset title
unset label
unset colorbox
# bottom panel
set tmargin at screen 0.40
set bmargin at screen 0.07
set ytics auto
set logscale y
set yrange [1:*]
set format x "%g"
set xlabel "time (s)"
set ylabel "cumulative count (log)"
set key top left
set grid
pos(v) = v > 0 ? v : 1/0
plot "lru_counters.csv" using 1:(pos($2)) skip 1 with lines lw 2 lc rgb "#1f77b4" title "hits", \
     ""                 using 1:(pos($3)) skip 1 with lines lw 2 dt 2 lc rgb "#7f7f7f" title "misses", \
     ""                 using 1:(pos($4)) skip 1 with lines lw 2 lc rgb "#d62728" title "evictions", \
     ""                 using 1:(pos($5)) skip 1 with lines lw 2 lc rgb "#2ca02c" title "invalidations"
unset multiplot
