# bench/plot.gp -- s7 concurrency sweep: aggregate tokens/s against concurrent
# streams, one line per server. bench/run.sh calls it after an s7 run; by hand:
#
#   gnuplot -e "datafile='bench/out/run-X/sweep.dat'; outfile='sweep.svg'; model='134m'" bench/plot.gp
#
# datafile: whitespace-separated columns "streams corral_tok_s llama_server_tok_s"
#           ('#' lines are comments; NaN = not measured)
# outfile:  *.png -> pngcairo if this gnuplot has it, else png (libgd);
#           anything else -> svg
# model:    shown in the title

if (!exists("datafile")) datafile = 'sweep.dat'
if (!exists("outfile")) outfile = 'throughput.svg'
if (!exists("model")) model = '?'

n = strlen(outfile)
if (n > 4 && outfile[n-3:n] eq '.png') {
    if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
        set terminal pngcairo size 900,560 font 'sans,11'
    } else {
        set terminal png size 900,560
    }
} else {
    set terminal svg size 900,560 dynamic font 'sans,12' background rgb 'white'
}
set output outfile

set title sprintf('corral vs llama-server: aggregate throughput, model %s (128-token prompts, 128 out)', model) noenhanced
set xlabel 'concurrent streams'
set ylabel 'aggregate tokens/s'
set logscale x 2
set xtics 2
set mxtics 1
set offsets graph 0.05, graph 0.05, graph 0.08, 0
set yrange [0:*]
set grid
set key top left box opaque
set datafile missing 'NaN'

plot datafile using 1:2 with linespoints lw 2 pt 7 ps 1.2 title 'corral', \
     datafile using 1:3 with linespoints lw 2 pt 5 ps 1.2 title 'llama-server'
