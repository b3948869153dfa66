# bench/itl.gp -- inter-token gaps over time in one 8-stream run, both
# servers on one chart (the tail is the point). bench/run.sh calls it after
# a run that traced gaps (s2, s7-c8, m-c8-*); by hand:
#
#   gnuplot -e "corral='X.corral.r1.itl.tsv'; llama='X.llama.r1.itl.tsv'; outfile='itl.svg'; title='...'" bench/itl.gp
#
# each file: "seconds<TAB>gap_ms<TAB>stream" lines (corral-loadgen --trace)

if (!exists("outfile")) outfile = 'itl.svg'
if (!exists("title")) title = 'inter-token gaps over time'
n = strlen(outfile)
if (n > 4 && outfile[n-3:n] eq '.png') {
    if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
        set terminal pngcairo size 900,480 font 'sans,11'
    } else {
        set terminal png size 900,480
    }
} else {
    set terminal svg size 900,480 dynamic font 'sans,12' background rgb 'white'
}
set output outfile
set title title noenhanced
set xlabel 'seconds since the first measured request'
set ylabel 'gap between tokens (ms, log scale)'
set logscale y
set grid ytics
set key top right
plot llama using 1:2 with points pt 7 ps 0.3 lc rgb '#d95f02' title 'llama-server', \
     corral using 1:2 with points pt 7 ps 0.3 lc rgb '#1b9e77' title 'corral'
