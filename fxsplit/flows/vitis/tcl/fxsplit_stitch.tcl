# fxsplit: stitch the partitions' Vitis HLS IPs into one Vivado design, from the partition DAG description.
#
#   vivado -mode batch -source tcl/fxsplit_stitch.tcl -tclargs desc=out/m/stitched/vitis/stitch.tcl \
#       [out=DIR] [synth=1] [export=1] [sim=0 tb=FILE tb_top=fxsplit_tb vectors=DIR] [part=PART] [ip_vendor=fxsplit.org]
#
# desc     the description: stitch.json as Tcl (fxsplit.flows.vitis.tcl_desc.to_tcl), which sets `fxsplit_desc`;
#          relative paths in it (ip_repo) are relative to the file's directory
# out      the Vivado project directory (default: vivado/ next to the description)
# synth    out-of-context synthesis of the stitched design; reports in OUT/reports/ (utilization, timing)
# export   package the stitched design as an IP in OUT/ip
# sim      xsim: the self-checking testbench TB (top module TB_TOP) against the wrapper, with the .hex files of
#          VECTORS copied next to it; fails unless it prints "N passed, 0 failed" with N > 0
#
# What it builds, one cell per partition IP (VLNV from the description), every DAG edge wired producer -> consumer:
#   io_parallel: each producer's data and ap_vld pins (xlconcat where there are several) -> an fxsplit_hold per
#     edge (tcl/rtl/fxsplit_join.v) -> the consumer's pins (xlslice where it has several); one fxsplit_join per
#     partition drives its ap_start from its holds (a join where it has several inputs) and from ap_ready/ap_done.
#     Ports: per model input <x>[bits], <x>_ap_vld (a one-cycle pulse while in_ready is high), in_ready; per
#     model output <y>[bits], <y>_ap_vld (a one-cycle pulse, all outputs of a sample together); ap_clk, ap_rst.
#   io_stream: AXI4-Stream interface nets; axis_broadcaster where a tensor has several consumers, an
#     axis_data_fifo as deep as the tensor (the description's fifo_depth) on every edge into a reconvergence
#     (bypass edges among them). Ports: one AXI4-Stream port per model input/output (<x>_tdata, _tvalid, _tready
#     in the wrapper), ap_start (hold high), ap_clk, ap_rst.
# Written for Vivado's Tcl 8.5 (no lmap, try, dict map).

namespace eval ::fxs {
    variable here [file dirname [file normalize [info script]]]
    variable opt
    variable D        ;# the description
    variable S        ;# its computed `stitch` part
    variable descdir
    variable clk_sinks {}
    variable rst_sinks {}
    variable rstn_sinks {}
    variable axis_ports {}
}

proc ::fxs::die {msg} { error "fxsplit_stitch: $msg" }
proc ::fxs::say {msg} { puts "fxsplit_stitch: $msg" }

# ------------------------------------------------------------------------------------------- options and description

proc ::fxs::parse_args {argv} {
    variable opt
    array set opt {desc "" out "" synth 1 export 1 sim 0 tb "" tb_top fxsplit_tb vectors "" part "" ip_vendor fxsplit.org}
    foreach a $argv {
        if {![regexp {^([a-z_]+)=(.*)$} $a -> k v]} { die "argument '$a' is not key=value" }
        if {![info exists opt($k)]} { die "unknown option '$k' (known: [lsort [array names opt]])" }
        set opt($k) $v
    }
    if {$opt(desc) eq ""} { die "desc=<stitch.tcl> is required" }
    if {$opt(sim) && $opt(tb) eq ""} { die "sim=1 needs tb=<testbench.v>" }
}

proc ::fxs::load_desc {} {
    variable opt; variable D; variable S; variable descdir
    set path [file normalize $opt(desc)]
    if {![file readable $path]} { die "cannot read the description $path" }
    set descdir [file dirname $path]
    # read and eval, not source: Vivado's source echoes each command, and the description is one long command
    set fh [open $path]
    set text [read $fh]
    close $fh
    eval $text
    if {![info exists fxsplit_desc]} { die "$path does not set fxsplit_desc" }
    set D $fxsplit_desc
    if {![dict exists $D stitch version] || [dict get $D stitch version] != 1} {
        die "$path has no stitch info of version 1 (write it with fxsplit.flows.vitis.tcl_desc.to_tcl)"
    }
    set S [dict get $D stitch]
    if {$opt(out) eq ""} { set opt(out) [file join $descdir vivado] }
    set opt(out) [file normalize $opt(out)]
    if {$opt(part) eq ""} { set opt(part) [dict get $S part] }
}

proc ::fxs::S {args} { variable S; return [dict get $S {*}$args] }
proc ::fxs::edge {i args} { return [dict get [lindex [S edges] $i] {*}$args] }
proc ::fxs::tensor {t args} { return [dict get [S tensors $t] {*}$args] }
proc ::fxs::cell_of {partition} { return [S partitions $partition cell] }

# ------------------------------------------------------------------------------------------- block-design helpers

proc ::fxs::pin {cell name} {
    set p [get_bd_pins -quiet /$cell/$name]
    if {$p eq ""} { die "cell $cell has no pin $name (the description and the IP disagree)" }
    return $p
}

proc ::fxs::ipin {cell name} {
    set p [get_bd_intf_pins -quiet /$cell/$name]
    if {$p eq ""} { die "cell $cell has no interface $name (the description and the IP disagree)" }
    return $p
}

proc ::fxs::port {name} {
    set p [get_bd_ports -quiet /$name]
    if {$p eq ""} { die "no port $name" }
    return $p
}

# the newest version of a Xilinx catalog IP, e.g. [xilinx_ip xlconcat]
proc ::fxs::xilinx_ip {name} {
    set defs [lsort -dictionary [get_ipdefs -all xilinx.com:ip:$name:*]]
    if {[llength $defs] == 0} { die "Vivado's IP catalog has no xilinx.com:ip:$name" }
    return [lindex $defs end]
}

proc ::fxs::ip_cell {vlnv name {config {}}} {
    set c [create_bd_cell -type ip -vlnv $vlnv $name]
    if {[llength $config]} { set_property -dict $config $c }
    return $c
}

proc ::fxs::module_cell {ref name {config {}}} {
    set c [create_bd_cell -type module -reference $ref $name]
    if {[llength $config]} { set_property -dict $config $c }
    return $c
}

# clock and reset of a cell, connected all at once in connect_clock_reset
proc ::fxs::clocked {cell clk rst {active_low 0}} {
    variable clk_sinks; variable rst_sinks; variable rstn_sinks
    lappend clk_sinks [pin $cell $clk]
    if {$active_low} { lappend rstn_sinks [pin $cell $rst] } else { lappend rst_sinks [pin $cell $rst] }
}

# the constant 1 (chain starts, output acknowledge)
proc ::fxs::one {} {
    if {[get_bd_cells -quiet /fxs_one] eq ""} {
        ip_cell [xilinx_ip xlconstant] fxs_one [list CONFIG.CONST_WIDTH 1 CONFIG.CONST_VAL 1]
    }
    return [pin fxs_one dout]
}

# pins (LSB first) -> one bus: a tree of xlconcat cells, at most 32 inputs each
proc ::fxs::concat_tree {name pins widths {level 0}} {
    if {[llength $pins] == 1} { return [lindex $pins 0] }
    set outs {}
    set ows {}
    for {set k 0} {$k < [llength $pins]} {incr k 32} {
        set chunk [lrange $pins $k [expr {$k + 31}]]
        set cw [lrange $widths $k [expr {$k + 31}]]
        if {[llength $chunk] == 1} {
            lappend outs [lindex $chunk 0]
            lappend ows [lindex $cw 0]
            continue
        }
        set c ${name}_l${level}_[expr {$k / 32}]
        set cfg [list CONFIG.NUM_PORTS [llength $chunk]]
        set sum 0
        for {set i 0} {$i < [llength $chunk]} {incr i} {
            lappend cfg CONFIG.IN${i}_WIDTH [lindex $cw $i]
            incr sum [lindex $cw $i]
        }
        ip_cell [xilinx_ip xlconcat] $c $cfg
        for {set i 0} {$i < [llength $chunk]} {incr i} {
            connect_bd_net [lindex $chunk $i] [pin $c In$i]
        }
        lappend outs [pin $c dout]
        lappend ows $sum
    }
    return [concat_tree $name $outs $ows [expr {$level + 1}]]
}

# chain the hold cells' prev_<what> -> all_<what>, from `first`; returns the last all_<what> pin
proc ::fxs::chain {holds what first} {
    set prev $first
    foreach h $holds {
        connect_bd_net $prev [pin $h prev_$what]
        set prev [pin $h all_$what]
    }
    return $prev
}

# ------------------------------------------------------------------------------------------- steps

proc ::fxs::create_project_step {} {
    variable opt; variable here; variable descdir
    file mkdir $opt(out)
    create_project -force fxsplit_stitch $opt(out) -part $opt(part)
    set_property target_language Verilog [current_project]
    set repos {}
    foreach p [dict get $::fxs::D partitions] {
        set repo [file normalize [file join $descdir [dict get $p ip_repo]]]
        if {![file isdirectory $repo]} {
            say "warning: IP repository $repo does not exist (run run_vitis.sh first)"
        }
        lappend repos $repo
    }
    set_property ip_repo_paths $repos [current_project]
    update_ip_catalog
    dict for {name p} [S partitions] {
        set vlnv [dict get $p vlnv]
        if {[llength [get_ipdefs -all $vlnv]] == 0} {
            die "partition $name: no IP $vlnv in the IP repositories (Vitis HLS export of $name missing?)"
        }
    }
    if {[S io_type] eq "io_parallel"} {
        add_files -norecurse [file join $here rtl fxsplit_join.v]
        update_compile_order -fileset sources_1
    }
}

proc ::fxs::create_bd_step {} {
    create_bd_design [S bd]
    create_bd_port -dir I -type clk -freq_hz [S clock_freq_hz] ap_clk
    create_bd_port -dir I -type rst ap_rst
    set_property CONFIG.POLARITY ACTIVE_HIGH [port ap_rst]
    set_property CONFIG.ASSOCIATED_RESET ap_rst [port ap_clk]
    dict for {name p} [S partitions] {
        set c [dict get $p cell]
        ip_cell [dict get $p vlnv] $c
        # the IP is the authority on its reset's polarity: Vitis HLS makes it active-low (ap_rst_n) when the
        # top has AXI interfaces, which the hls4ml pragmas do not say
        set rst [dict get $p reset]
        set other [expr {$rst eq "ap_rst" ? "ap_rst_n" : "ap_rst"}]
        if {[get_bd_pins -quiet /$c/$rst] eq "" && [get_bd_pins -quiet /$c/$other] ne ""} {
            say "partition $name: its IP resets on $other, not $rst as described; using $other"
            set rst $other
        }
        clocked $c ap_clk $rst [expr {$rst eq "ap_rst_n"}]
    }
}

proc ::fxs::connect_clock_reset {} {
    variable clk_sinks; variable rst_sinks; variable rstn_sinks; variable axis_ports
    connect_bd_net [port ap_clk] {*}$clk_sinks
    if {[llength $rst_sinks]} { connect_bd_net [port ap_rst] {*}$rst_sinks }
    if {[llength $rstn_sinks]} {
        ip_cell [xilinx_ip util_vector_logic] fxs_rst_n [list CONFIG.C_OPERATION not CONFIG.C_SIZE 1]
        connect_bd_net [port ap_rst] [pin fxs_rst_n Op1]
        connect_bd_net [pin fxs_rst_n Res] {*}$rstn_sinks
    }
    if {[llength $axis_ports]} {
        set_property CONFIG.ASSOCIATED_BUSIF [join $axis_ports :] [port ap_clk]
    }
}

# io_parallel: producer pins -> hold per edge -> consumer pins; a join per partition
proc ::fxs::wire_parallel {} {
    set edges [S edges]
    # every tensor's source: one data bus and one valid bus (LSB = element 0)
    dict for {t info} [S tensors] {
        set bits [dict get $info bits]
        if {[dict get $info producer] eq "input"} {
            create_bd_port -dir I -from [expr {$bits - 1}] -to 0 -type data $t
            create_bd_port -dir I ${t}_ap_vld
            set src($t) [list [port $t] [port ${t}_ap_vld]]
        } else {
            set c [cell_of [dict get $info producer]]
            set w [dict get $info pin_width]
            set dp {}; set vp {}; set dw {}; set vw {}
            foreach d [dict get $info data] v [dict get $info valid] {
                lappend dp [pin $c $d]; lappend dw $w
                lappend vp [pin $c $v]; lappend vw 1
            }
            set src($t) [list [concat_tree fxs_cat_$t $dp $dw] [concat_tree fxs_catv_$t $vp $vw]]
        }
    }
    # one hold per edge, wired to its consumer's pins
    set i 0
    foreach e $edges {
        set t [dict get $e tensor]
        set consumer [dict get $e consumer]
        set bits [tensor $t bits]
        set ew [tensor $t element_width]
        if {$consumer eq "output"} { set h fxs_hold_out_$t } else { set h fxs_hold_${consumer}_$t }
        module_cell fxsplit_hold $h [list CONFIG.W $bits CONFIG.NV [tensor $t nv]]
        clocked $h ap_clk ap_rst
        connect_bd_net [lindex $src($t) 0] [pin $h din]
        connect_bd_net [lindex $src($t) 1] [pin $h din_vld]
        if {$consumer eq "output"} {
            create_bd_port -dir O -from [expr {$bits - 1}] -to 0 -type data $t
            create_bd_port -dir O ${t}_ap_vld
            connect_bd_net [pin $h dout] [port $t]
            connect_bd_net [pin $h dout_vld] [port ${t}_ap_vld]
        } else {
            set c [cell_of $consumer]
            set data [dict get $e data]
            if {[llength $data] == 1} {
                connect_bd_net [pin $h dout] [pin $c [lindex $data 0 0]]
            } else {
                foreach d $data {
                    foreach {name first count width} $d break
                    set s fxs_slice_${consumer}_$name
                    ip_cell [xilinx_ip xlslice] $s [list CONFIG.DIN_WIDTH $bits \
                        CONFIG.DIN_FROM [expr {($first + $count) * $ew - 1}] CONFIG.DIN_TO [expr {$first * $ew}] \
                        CONFIG.DOUT_WIDTH $width]
                    connect_bd_net [pin $h dout] [pin $s Din]
                    connect_bd_net [pin $s Dout] [pin $c $name]
                }
            }
            set vpins {}
            foreach v [dict get $e valid] { lappend vpins [pin $c $v] }
            connect_bd_net [pin $h dout_vld] {*}$vpins
        }
        set hold($i) $h
        incr i
    }
    # a join per partition: start when every input hold is full and every hold it feeds is empty
    dict for {name p} [S partitions] {
        set c [dict get $p cell]
        set j fxs_join_$name
        module_cell fxsplit_join $j
        clocked $j ap_clk ap_rst
        set ins {}
        foreach k [dict get $p inputs] { lappend ins $hold($k) }
        connect_bd_net [chain $ins full [one]] [pin $j inputs_full]
        set feeds {}
        foreach k [dict get $p feeds] { lappend feeds $hold($k) }
        connect_bd_net [chain $feeds free [one]] [pin $j outputs_free]
        set fire [list [pin $c ap_start]]
        set ack [list [pin $j ap_ready]]
        foreach h $ins { lappend fire [pin $h fire]; lappend ack [pin $h ack] }
        connect_bd_net [pin $j ap_start] {*}$fire
        connect_bd_net [pin $c ap_ready] {*}$ack
        connect_bd_net [pin $c ap_done] [pin $j ap_done]
    }
    # model inputs: in_ready while every hold they feed is empty
    set feeds {}
    foreach k [S input_feeds] { lappend feeds $hold($k) }
    create_bd_port -dir O in_ready
    connect_bd_net [chain $feeds free [one]] [port in_ready]
    # model outputs: all of a sample leave together, acknowledged at once
    set outs {}
    for {set k 0} {$k < [llength $edges]} {incr k} {
        if {[edge $k consumer] eq "output"} { lappend outs $hold($k) }
    }
    set fire {}
    set ack {}
    foreach h $outs { lappend fire [pin $h fire]; lappend ack [pin $h ack] }
    connect_bd_net [chain $outs full [one]] {*}$fire
    connect_bd_net [one] {*}$ack
}

proc ::fxs::axis_port {mode t} {
    variable axis_ports
    set p [create_bd_intf_port -mode $mode -vlnv xilinx.com:interface:axis_rtl:1.0 $t]
    set_property -dict [list CONFIG.TDATA_NUM_BYTES [expr {[tensor $t tdata_width] / 8}] CONFIG.HAS_TLAST 0 \
        CONFIG.HAS_TREADY 1 CONFIG.FREQ_HZ [S clock_freq_hz]] $p
    lappend axis_ports $t
    return $p
}

# io_stream: AXI4-Stream nets; a broadcaster per tensor with several consumers; FIFOs into reconvergences
proc ::fxs::wire_stream {} {
    set edges [S edges]
    dict for {t info} [S tensors] {
        set nbytes [expr {[dict get $info tdata_width] / 8}]
        if {[dict get $info producer] eq "input"} {
            set src [axis_port Slave $t]
        } else {
            set src [ipin [cell_of [dict get $info producer]] [dict get $info intf]]
        }
        set mine [dict get $info edges]
        if {[llength $mine] == 1} {
            set outs [list $src]
        } else {
            set b fxs_bcast_$t
            ip_cell [xilinx_ip axis_broadcaster] $b [list CONFIG.NUM_MI [llength $mine] \
                CONFIG.S_TDATA_NUM_BYTES $nbytes CONFIG.M_TDATA_NUM_BYTES $nbytes]
            clocked $b aclk aresetn 1
            connect_bd_intf_net $src [ipin $b S_AXIS]
            set outs {}
            for {set k 0} {$k < [llength $mine]} {incr k} { lappend outs [ipin $b [format M%02d_AXIS $k]] }
        }
        foreach k $mine out $outs {
            set consumer [edge $k consumer]
            set depth [edge $k fifo_depth]
            if {$depth > 0} {
                set f fxs_fifo_${consumer}_$t
                ip_cell [xilinx_ip axis_data_fifo] $f [list CONFIG.FIFO_DEPTH $depth CONFIG.TDATA_NUM_BYTES $nbytes \
                    CONFIG.IS_ACLK_ASYNC 0]
                clocked $f s_axis_aclk s_axis_aresetn 1
                connect_bd_intf_net $out [ipin $f S_AXIS]
                set out [ipin $f M_AXIS]
            }
            if {$consumer eq "output"} {
                connect_bd_intf_net $out [axis_port Master $t]
            } else {
                connect_bd_intf_net $out [ipin [cell_of $consumer] [edge $k intf]]
            }
        }
    }
    # hls4ml's io_stream tops are started once and keep running while ap_start is high
    create_bd_port -dir I ap_start
    set starts {}
    dict for {name p} [S partitions] { lappend starts [pin [dict get $p cell] ap_start] }
    connect_bd_net [port ap_start] {*}$starts
}

proc ::fxs::finish_bd_step {} {
    variable opt
    validate_bd_design
    save_bd_design
    set bd [get_files [S bd].bd]
    add_files -norecurse [make_wrapper -files $bd -top]
    set_property top [S bd]_wrapper [current_fileset]
    update_compile_order -fileset sources_1
    say "block design [S bd] validated: [llength [get_bd_cells]] cells"
}

proc ::fxs::synth_step {} {
    variable opt
    set bd [get_files [S bd].bd]
    set_property synth_checkpoint_mode None $bd
    generate_target all $bd
    set xdc [file join $opt(out) fxsplit_ooc.xdc]
    set fh [open $xdc w]
    puts $fh "create_clock -period [S clock_period] -name ap_clk \[get_ports ap_clk\]"
    close $fh
    add_files -fileset constrs_1 -norecurse $xdc
    set_property USED_IN {synthesis implementation out_of_context} [get_files $xdc]
    synth_design -top [S bd]_wrapper -part $opt(part) -mode out_of_context
    set rep [file join $opt(out) reports]
    file mkdir $rep
    report_utilization -file [file join $rep utilization.rpt]
    report_timing_summary -file [file join $rep timing_summary.rpt]
    write_checkpoint -force [file join $opt(out) [S bd]_ooc.dcp]
    say "synthesized out of context; reports in $rep"
}

proc ::fxs::export_step {} {
    variable opt
    set root [file join $opt(out) ip]
    set vlnv $opt(ip_vendor):fxsplit:[S bd]:1.0
    ipx::package_project -root_dir $root -vendor $opt(ip_vendor) -library fxsplit -taxonomy /UserIP \
        -module [S bd] -import_files
    set core [ipx::find_open_core $vlnv]
    if {$core eq ""} { die "ipx::package_project did not open the core $vlnv" }
    set_property description "fxsplit: [llength [dict get $::fxs::D partitions]] partitions stitched" $core
    ipx::create_xgui_files $core
    ipx::update_checksums $core
    ipx::check_integrity $core
    ipx::save_core $core
    say "IP $vlnv exported to $root"
}

proc ::fxs::sim_step {} {
    variable opt
    set tb [file normalize $opt(tb)]
    if {![file readable $tb]} { die "cannot read the testbench $tb" }
    add_files -fileset sim_1 -norecurse $tb
    set_property top $opt(tb_top) [get_filesets sim_1]
    set_property top_lib xil_defaultlib [get_filesets sim_1]
    set_property -name xsim.simulate.runtime -value all -objects [get_filesets sim_1]
    launch_simulation -simset sim_1 -mode behavioral -scripts_only
    set proj [current_project]
    set dir [file join [get_property DIRECTORY $proj] [get_property NAME $proj].sim sim_1 behav xsim]
    if {$opt(vectors) ne ""} {
        foreach f [glob -nocomplain -directory [file normalize $opt(vectors)] *.hex] { file copy -force $f $dir }
    }
    set log ""
    set here [pwd]
    cd $dir
    foreach step {compile elaborate simulate} {
        if {[catch {exec bash ./$step.sh 2>@1} out]} {
            cd $here
            die "xsim $step failed:\n$out"
        }
        append log $out "\n"
    }
    cd $here
    set fh [open [file join $opt(out) xsim.log] w]
    puts $fh $log
    close $fh
    set tail [join [lrange [split [string trim $log] \n] end-24 end] \n]
    if {![regexp {(\d+) passed, (\d+) failed} $log -> passed failed]} {
        die "the testbench printed no 'N passed, M failed' summary (log: [file join $opt(out) xsim.log]):\n$tail"
    }
    if {$failed != 0 || $passed == 0} {
        die "xsim: $passed passed, $failed failed (log: [file join $opt(out) xsim.log]):\n$tail"
    }
    say "xsim: $passed passed, 0 failed"
}

proc ::fxs::main {argv} {
    variable opt
    parse_args $argv
    load_desc
    create_project_step
    create_bd_step
    if {[S io_type] eq "io_parallel"} { wire_parallel } else { wire_stream }
    connect_clock_reset
    finish_bd_step
    if {$opt(synth)} { synth_step }
    if {$opt(export)} { export_step }
    if {$opt(sim)} { sim_step }
}

::fxs::main $::argv
