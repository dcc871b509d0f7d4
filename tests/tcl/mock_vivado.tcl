# A stand-in for the Vivado Tcl commands fxsplit/flows/vitis/tcl/fxsplit_stitch.tcl calls, in plain Tcl
# (runs in Debian's tclsh).
#
# It records the design the stitcher builds (project, IP repositories, block-design cells with their
# configuration, ports, nets, interface nets, files, and the steps run) and refuses, with an error as Vivado
# would, what Vivado would refuse:
#   - an IP whose VLNV is not in the catalog (HLS IPs only once their repository is in ip_repo_paths and
#     update_ip_catalog ran), a module reference to a module that is not in an added source file, a cell or
#     port name used twice, a CONFIG parameter the IP or module does not have or a value it does not accept;
#   - a pin, port or interface that does not exist; a net with two drivers (an input driven twice); a net
#     whose members differ in width; an interface connected twice, master to master, or with different TDATA;
#   - at validate_bd_design and mock::check: any input pin (or interface, or output port) left undriven, and
#     any axis_data_fifo shallower than the beats of the tensor that passes through it;
#   - synthesis before the design is validated and wrapped, without an out-of-context clock, and so on.
# The pins of an HLS IP come from a separate *catalog* description (mock::load_catalog): the partitions'
# interfaces as fxsplit read them from the hls4ml pragmas (Vitis HLS's naming rules), not from the description
# the stitcher is given, so a wrong pin name in the stitcher's description is refused. The pins of the
# module references are parsed from the Verilog file the stitcher adds; the Xilinx IPs (xlconcat, xlslice,
# xlconstant, util_vector_logic, axis_data_fifo, axis_broadcaster) have their documented pins and parameters.
#
# What it does not model: Vivado's parameter propagation, IP generation, synthesis, timing, packaging and
# simulation (those steps are recorded and their files written as placeholders), clock domains, and any
# Vivado behaviour not listed above. mock::write_json dumps the recorded design for the Python tests.

namespace eval ::mock {
    variable catalog [dict create]      ;# vlnv -> {kind repo pins intfs}
    variable repos_seen {}              ;# repo paths made available by update_ip_catalog
    variable project ""
    variable projdir ""
    variable part ""
    variable pprops [dict create]
    variable files [dict create sources_1 {} constrs_1 {} sim_1 {}]
    variable fileprops [dict create]
    variable fsprops [dict create sources_1 {} constrs_1 {} sim_1 {}]
    variable modules [dict create]      ;# module -> {params {n default} ports {n {dir msb lsb}}}
    variable bd ""
    variable cells [dict create]        ;# name -> {kind vlnv ref config}
    variable ports [dict create]        ;# name -> {dir width type config}
    variable iports [dict create]       ;# name -> {mode config}
    variable net_of [dict create]       ;# object -> net id
    variable nets [dict create]         ;# net id -> list of objects
    variable nnet 0
    variable inet_of [dict create]      ;# interface object -> partner
    variable inets {}
    variable steps {}
    variable validated 0
    variable wrapped 0
    variable cores [dict create]
    variable shape_cache [dict create]  ;# cell -> cell_shape, cleared when a cell or parameter changes
}

proc ::mock::refuse {msg} { error "MOCK-VIVADO ERROR: $msg" }
proc ::mock::step {args} { variable steps; lappend steps $args }

# ----------------------------------------------------------------------------------------- catalog

# Xilinx IPs: vlnv, and their parameters with defaults
proc ::mock::xilinx_params {name} {
    switch -- $name {
        xlconstant { return {CONST_WIDTH 1 CONST_VAL 1} }
        xlconcat {
            set p {NUM_PORTS 2 dout_width 2}
            for {set i 0} {$i < 32} {incr i} { lappend p IN${i}_WIDTH 1 }
            return $p
        }
        xlslice { return {DIN_WIDTH 32 DIN_FROM 0 DIN_TO 0 DOUT_WIDTH 1} }
        util_vector_logic { return {C_OPERATION and C_SIZE 8} }
        axis_data_fifo {
            return {FIFO_DEPTH 1024 TDATA_NUM_BYTES 1 IS_ACLK_ASYNC 0 FIFO_MODE 1 HAS_TLAST 0 HAS_TKEEP 0
                HAS_TSTRB 0 TUSER_WIDTH 0 TID_WIDTH 0 TDEST_WIDTH 0 FIFO_MEMORY_TYPE auto SYNCHRONIZATION_STAGES 3
                HAS_WR_DATA_COUNT 0 HAS_RD_DATA_COUNT 0 HAS_AEMPTY 0 HAS_AFULL 0}
        }
        axis_broadcaster {
            set p {NUM_MI 2 S_TDATA_NUM_BYTES 1 M_TDATA_NUM_BYTES 1 HAS_TREADY 1 HAS_TLAST 0 HAS_TKEEP 0
                HAS_TSTRB 0 TUSER_WIDTH 0 TID_WIDTH 0 TDEST_WIDTH 0}
            for {set i 0} {$i < 16} {incr i} { lappend p [format M%02d_TDATA_REMAP $i] tdata }
            return $p
        }
    }
    refuse "unknown Xilinx IP $name"
}

proc ::mock::init_catalog {} {
    variable catalog
    foreach {name ver} {xlconstant 1.1 xlconcat 2.1 xlslice 1.0 util_vector_logic 2.0 axis_data_fifo 2.0
                        axis_broadcaster 1.1} {
        dict set catalog xilinx.com:ip:$name:$ver [dict create kind xilinx name $name repo ""]
    }
}
::mock::init_catalog

# The HLS IPs, from a description (stitch.json as Tcl): per partition its repository and interface.
proc ::mock::load_catalog {path} {
    variable catalog
    source $path
    set dir [file dirname [file normalize $path]]
    foreach p [dict get $fxsplit_desc partitions] {
        set name [dict get $p name]
        set pins [dict create]
        set intfs [dict create]
        foreach c [dict get $p interface control] {
            set dir_ [expr {$c in {ap_done ap_idle ap_ready} ? "O" : "I"}]
            dict set pins $c [dict create dir $dir_ width 1 intf ""]
        }
        foreach side {inputs outputs} {
            foreach a [dict get $p interface $side] {
                set arg [dict get $a arg]
                set axis [expr {[dict get $a protocol] eq "axis"}]
                foreach pin [dict get $a pins] {
                    set d [expr {[dict get $pin dir] eq "in" ? "I" : "O"}]
                    dict set pins [dict get $pin name] [dict create dir $d width [dict get $pin width] \
                        intf [expr {$axis ? $arg : ""}]]
                    if {$axis && [dict get $pin role] eq "data"} {
                        dict set intfs $arg [dict create mode [expr {$side eq "inputs" ? "Slave" : "Master"}] \
                            tdata [dict get $pin width] beats [dict get $pin beats] tensor [dict get $a port]]
                    }
                }
            }
        }
        set repo [file normalize [file join $dir [dict get $p ip_repo]]]
        dict set catalog xilinx.com:hls:$name:1.0 [dict create kind hls name $name repo $repo pins $pins intfs $intfs]
    }
}

proc ::mock::available {vlnv} {
    variable catalog; variable repos_seen
    if {![dict exists $catalog $vlnv]} { return 0 }
    set e [dict get $catalog $vlnv]
    return [expr {[dict get $e kind] ne "hls" || [dict get $e repo] in $repos_seen}]
}

# ----------------------------------------------------------------------------------------- Verilog headers

proc ::mock::parse_verilog {path} {
    variable modules
    set fh [open $path]; set text [read $fh]; close $fh
    regsub -all {/\*.*?\*/} $text "" text
    regsub -all {\(\*.*?\*\)} $text "" text
    regsub -all {//[^\n]*} $text "" text
    foreach {all name params portlist} [regexp -all -inline {module\s+(\w+)\s*(#\s*\((?:[^()]|\([^()]*\))*\))?\s*\(([^;]*)\)\s*;} $text] {
        set ps [dict create]
        foreach {m pn pv} [regexp -all -inline {parameter\s+(?:integer\s+)?(\w+)\s*=\s*([^,)\s]+)} $params] {
            dict set ps $pn $pv
        }
        set pts [dict create]
        foreach {m d msb lsb pn} [regexp -all -inline {(input|output)\s+(?:wire|reg)?\s*(?:\[([^:\]]+):([^\]]+)\])?\s*(\w+)} $portlist] {
            if {$msb eq ""} { set msb 0; set lsb 0 }
            dict set pts $pn [dict create dir [expr {$d eq "input" ? "I" : "O"}] msb $msb lsb $lsb]
        }
        dict set modules $name [dict create params $ps ports $pts file $path]
    }
}

proc ::mock::eval_width {msb lsb params} {
    foreach e {msb lsb} {
        set x [set $e]
        dict for {k v} $params { regsub -all "\\y$k\\y" $x $v x }
        set $e [expr $x]
    }
    return [expr {$msb - $lsb + 1}]
}

# ----------------------------------------------------------------------------------------- cells and pins

proc ::mock::strip {obj} { return [string trimleft $obj /] }

# the pins and interfaces of a cell: {pins {name {dir width intf}} intfs {name {mode tdata}}}
proc ::mock::cell_shape {name} {
    variable shape_cache
    if {![dict exists $shape_cache $name]} { dict set shape_cache $name [compute_shape $name] }
    return [dict get $shape_cache $name]
}

proc ::mock::compute_shape {name} {
    variable cells; variable catalog; variable modules
    set c [dict get $cells $name]
    set cfg [dict get $c config]
    set pins [dict create]
    set intfs [dict create]
    switch -- [dict get $c kind] {
        hls {
            set e [dict get $catalog [dict get $c vlnv]]
            set pins [dict get $e pins]
            dict for {n i} [dict get $e intfs] { dict set intfs $n [dict create mode [dict get $i mode] tdata [dict get $i tdata]] }
        }
        module {
            set m [dict get $modules [dict get $c ref]]
            dict for {pn p} [dict get $m ports] {
                set w [eval_width [dict get $p msb] [dict get $p lsb] $cfg]
                if {$w < 1} { refuse "$name/$pn would be $w bits wide" }
                dict set pins $pn [dict create dir [dict get $p dir] width $w intf ""]
            }
        }
        xilinx {
            set P {}
            dict for {k v} $cfg { dict set P $k $v }
            switch -- [dict get $c name] {
                xlconstant { dict set pins dout [dict create dir O width [dict get $P CONST_WIDTH] intf ""] }
                xlconcat {
                    set sum 0
                    for {set i 0} {$i < [dict get $P NUM_PORTS]} {incr i} {
                        dict set pins In$i [dict create dir I width [dict get $P IN${i}_WIDTH] intf ""]
                        incr sum [dict get $P IN${i}_WIDTH]
                    }
                    dict set pins dout [dict create dir O width $sum intf ""]
                }
                xlslice {
                    dict set pins Din [dict create dir I width [dict get $P DIN_WIDTH] intf ""]
                    dict set pins Dout [dict create dir O width [dict get $P DOUT_WIDTH] intf ""]
                }
                util_vector_logic {
                    dict set pins Op1 [dict create dir I width [dict get $P C_SIZE] intf ""]
                    if {[dict get $P C_OPERATION] ne "not"} {
                        dict set pins Op2 [dict create dir I width [dict get $P C_SIZE] intf ""]
                    }
                    dict set pins Res [dict create dir O width [dict get $P C_SIZE] intf ""]
                }
                axis_data_fifo {
                    dict set pins s_axis_aclk [dict create dir I width 1 intf ""]
                    dict set pins s_axis_aresetn [dict create dir I width 1 intf ""]
                    set t [expr {8 * [dict get $P TDATA_NUM_BYTES]}]
                    dict set intfs S_AXIS [dict create mode Slave tdata $t]
                    dict set intfs M_AXIS [dict create mode Master tdata $t]
                }
                axis_broadcaster {
                    dict set pins aclk [dict create dir I width 1 intf ""]
                    dict set pins aresetn [dict create dir I width 1 intf ""]
                    dict set intfs S_AXIS [dict create mode Slave tdata [expr {8 * [dict get $P S_TDATA_NUM_BYTES]}]]
                    for {set i 0} {$i < [dict get $P NUM_MI]} {incr i} {
                        dict set intfs [format M%02d_AXIS $i] [dict create mode Master \
                            tdata [expr {8 * [dict get $P M_TDATA_NUM_BYTES]}]]
                    }
                }
            }
        }
    }
    return [dict create pins $pins intfs $intfs]
}

# a value Vivado would refuse for a Xilinx IP parameter
proc ::mock::check_param {name ipname k v cfg} {
    set pow2 {16 32 64 128 256 512 1024 2048 4096 8192 16384 32768}
    switch -glob -- $ipname,$k {
        axis_data_fifo,FIFO_DEPTH { if {$v ni $pow2} { refuse "$name: FIFO_DEPTH $v is not one of $pow2" } }
        axis_data_fifo,TDATA_NUM_BYTES - axis_broadcaster,*_TDATA_NUM_BYTES {
            if {![string is integer -strict $v] || $v < 1 || $v > 512} { refuse "$name: $k $v is not in 1..512" }
        }
        axis_broadcaster,NUM_MI { if {![string is integer -strict $v] || $v < 2 || $v > 16} { refuse "$name: NUM_MI $v is not in 2..16" } }
        xlconcat,NUM_PORTS { if {![string is integer -strict $v] || $v < 1 || $v > 32} { refuse "$name: NUM_PORTS $v is not in 1..32" } }
        xlconcat,IN*_WIDTH - xlslice,DIN_WIDTH - xlconstant,CONST_WIDTH - util_vector_logic,C_SIZE {
            if {![string is integer -strict $v] || $v < 1 || $v > 4096} { refuse "$name: $k $v is not in 1..4096" }
        }
        util_vector_logic,C_OPERATION { if {$v ni {and or xor not}} { refuse "$name: C_OPERATION $v" } }
    }
}

proc ::mock::check_cell_config {name} {
    variable cells
    set c [dict get $cells $name]
    if {[dict get $c kind] ne "xilinx"} { return }
    set P [dict get $c config]
    if {[dict get $c name] eq "xlslice"} {
        set f [dict get $P DIN_FROM]; set t [dict get $P DIN_TO]
        if {$t > $f || $f >= [dict get $P DIN_WIDTH] || [dict get $P DOUT_WIDTH] != $f - $t + 1} {
            refuse "$name: slice \[$f:$t\] of [dict get $P DIN_WIDTH] bits into [dict get $P DOUT_WIDTH] bits"
        }
    }
}

proc ::mock::pin_info {obj} {
    variable cells; variable ports
    set parts [split [strip $obj] /]
    if {[llength $parts] == 2} {
        lassign $parts cell pin
        if {![dict exists $cells $cell]} { return "" }
        set sh [cell_shape $cell]
        if {![dict exists $sh pins $pin]} { return "" }
        return [dict get $sh pins $pin]
    }
    if {[llength $parts] == 1 && [dict exists $ports [lindex $parts 0]]} {
        set p [dict get $ports [lindex $parts 0]]
        # seen from inside the design, an input port drives and an output port is driven
        return [dict create dir [expr {[dict get $p dir] eq "I" ? "O" : "I"}] width [dict get $p width] intf ""]
    }
    return ""
}

proc ::mock::intf_info {obj} {
    variable cells; variable iports
    set parts [split [strip $obj] /]
    if {[llength $parts] == 2} {
        lassign $parts cell intf
        if {![dict exists $cells $cell]} { return "" }
        set sh [cell_shape $cell]
        if {![dict exists $sh intfs $intf]} { return "" }
        return [dict get $sh intfs $intf]
    }
    if {[llength $parts] == 1 && [dict exists $iports [lindex $parts 0]]} {
        set p [dict get $iports [lindex $parts 0]]
        set tdata [expr {8 * [dict get $p config CONFIG.TDATA_NUM_BYTES]}]
        return [dict create mode [expr {[dict get $p mode] eq "Slave" ? "Master" : "Slave"}] tdata $tdata]
    }
    return ""
}

# ----------------------------------------------------------------------------------------- option parsing

proc ::mock::opts {spec argv} {
    # spec: list of flags that take a value; returns {opts positional}
    set o [dict create]
    set pos {}
    for {set i 0} {$i < [llength $argv]} {incr i} {
        set a [lindex $argv $i]
        if {[string index $a 0] eq "-" && ![string is double -strict $a]} {
            set k [string range $a 1 end]
            if {$k in $spec} { incr i; dict set o $k [lindex $argv $i] } else { dict set o $k 1 }
        } else {
            lappend pos $a
        }
    }
    return [list $o $pos]
}

# ----------------------------------------------------------------------------------------- project commands

proc ::create_project {args} {
    lassign [::mock::opts {part} $args] o pos
    lassign $pos name dir
    set ::mock::project $name
    set ::mock::projdir [file normalize $dir]
    if {![dict exists $o part]} { ::mock::refuse "create_project without -part" }
    set ::mock::part [dict get $o part]
    ::mock::step create_project $name $::mock::projdir $::mock::part
    file mkdir $::mock::projdir
    return $name
}

proc ::current_project {} {
    if {$::mock::project eq ""} { ::mock::refuse "no open project" }
    return $::mock::project
}
proc ::current_fileset {args} { return sources_1 }
proc ::get_filesets {args} {
    lassign [::mock::opts {} $args] o pos
    set r {}
    foreach n $pos { if {[dict exists $::mock::files $n]} { lappend r $n } }
    return $r
}

proc ::update_ip_catalog {args} {
    set ::mock::repos_seen {}
    if {[dict exists $::mock::pprops ip_repo_paths]} {
        foreach r [dict get $::mock::pprops ip_repo_paths] { lappend ::mock::repos_seen [file normalize $r] }
    }
    ::mock::step update_ip_catalog $::mock::repos_seen
}

proc ::get_ipdefs {args} {
    lassign [::mock::opts {} $args] o pos
    set r {}
    dict for {v e} $::mock::catalog {
        foreach pat $pos { if {[string match $pat $v] && [::mock::available $v]} { lappend r $v } }
    }
    return $r
}

proc ::add_files {args} {
    lassign [::mock::opts {fileset} $args] o pos
    set fs [expr {[dict exists $o fileset] ? [dict get $o fileset] : "sources_1"}]
    foreach f [join $pos] {
        set f [file normalize $f]
        if {![file exists $f]} { ::mock::refuse "add_files: $f does not exist" }
        dict lappend ::mock::files $fs $f
        if {[string match *.v $f] && $fs eq "sources_1"} { ::mock::parse_verilog $f }
    }
    ::mock::step add_files $fs {*}$pos
    return $pos
}

proc ::get_files {args} {
    lassign [::mock::opts {of_objects} $args] o pos
    set r {}
    dict for {fs fl} $::mock::files {
        foreach f $fl {
            foreach pat $pos {
                if {$f eq [file normalize $pat] || [string match $pat [file tail $f]] || [string match $pat $f]} {
                    if {$f ni $r} { lappend r $f }
                }
            }
        }
    }
    if {[llength $r] == 0 && ![dict exists $o quiet]} { ::mock::refuse "get_files: no file matches $pos" }
    return $r
}

proc ::update_compile_order {args} { ::mock::step update_compile_order {*}$args }

# ----------------------------------------------------------------------------------------- properties

proc ::mock::set_one {k v obj} {
    variable cells; variable ports; variable iports; variable pprops; variable fsprops; variable fileprops
    set name [strip $obj]
    if {$obj eq $::mock::project} {
        dict set pprops $k $v
    } elseif {[dict exists $fsprops $obj]} {
        dict set fsprops $obj $k $v
    } elseif {[string index $obj 0] eq "/" && [dict exists $cells $name]} {
        if {![string match CONFIG.* $k]} { refuse "set_property $k on cell $name: not a CONFIG parameter" }
        set p [string range $k 7 end]
        set c [dict get $cells $name]
        switch -- [dict get $c kind] {
            hls { refuse "$name ([dict get $c vlnv]) has no parameter $p" }
            module {
                if {![dict exists $::mock::modules [dict get $c ref] params $p]} {
                    refuse "module [dict get $c ref] has no parameter $p"
                }
                if {![string is integer -strict $v]} { refuse "$name: $p = '$v' is not an integer" }
            }
            xilinx {
                if {![dict exists [xilinx_params [dict get $c name]] $p]} {
                    refuse "[dict get $c vlnv] has no parameter $p"
                }
                check_param $name [dict get $c name] $p $v [dict get $c config]
            }
        }
        dict set cells $name config $p $v
        set ::mock::shape_cache [dict create]
    } elseif {[string index $obj 0] eq "/" && [dict exists $ports $name]} {
        dict set ports $name config $k $v
    } elseif {[string index $obj 0] eq "/" && [dict exists $iports $name]} {
        dict set iports $name config $k $v
    } elseif {[dict exists $::mock::cores $obj]} {
        dict set ::mock::pprops core:$obj:$k $v
    } elseif {[file pathtype $obj] eq "absolute" && [file exists $obj]} {
        dict set fileprops $obj $k $v
    } else {
        refuse "set_property $k: no object '$obj'"
    }
}

proc ::set_property {args} {
    lassign [::mock::opts {name value objects dict} $args] o pos
    if {[dict exists $o dict]} {
        set objs [join $pos]
        foreach obj $objs { foreach {k v} [dict get $o dict] { ::mock::set_one $k $v $obj } }
        foreach obj $objs { if {[dict exists $::mock::cells [::mock::strip $obj]]} { ::mock::check_cell_config [::mock::strip $obj] } }
        return
    }
    if {[dict exists $o name]} {
        set k [dict get $o name]; set v [dict get $o value]; set objs [dict get $o objects]
    } else {
        lassign $pos k v objs
    }
    foreach obj $objs {
        ::mock::set_one $k $v $obj
        if {[dict exists $::mock::cells [::mock::strip $obj]]} { ::mock::check_cell_config [::mock::strip $obj] }
    }
}

proc ::get_property {k obj} {
    if {$obj eq $::mock::project} {
        switch -- $k { DIRECTORY { return $::mock::projdir } NAME { return $::mock::project } }
        if {[dict exists $::mock::pprops $k]} { return [dict get $::mock::pprops $k] }
        return ""
    }
    set i [::mock::pin_info $obj]
    if {$i ne ""} {
        switch -- $k { NAME { return [file tail $obj] } DIR { return [dict get $i dir] } }
    }
    ::mock::refuse "get_property $k $obj: not modelled"
}

# ----------------------------------------------------------------------------------------- block design

proc ::create_bd_design {name} {
    if {$::mock::project eq ""} { ::mock::refuse "create_bd_design without a project" }
    if {$::mock::bd ne ""} { ::mock::refuse "a block design is already open" }
    set ::mock::bd $name
    set f [file join $::mock::projdir $::mock::project.srcs sources_1 bd $name $name.bd]
    file mkdir [file dirname $f]
    set fh [open $f w]; puts $fh "mock block design"; close $fh
    dict lappend ::mock::files sources_1 $f
    ::mock::step create_bd_design $name
    return $name
}

proc ::mock::need_bd {} { if {$::mock::bd eq ""} { refuse "no block design is open" } }

proc ::mock::new_name {name} {
    variable cells; variable ports; variable iports
    if {[dict exists $cells $name] || [dict exists $ports $name] || [dict exists $iports $name]} {
        refuse "the name $name is already used in the block design"
    }
    if {![regexp {^[A-Za-z][A-Za-z0-9_]*$} $name]} { refuse "'$name' is not a legal block-design name" }
}

proc ::create_bd_cell {args} {
    ::mock::need_bd
    lassign [::mock::opts {type vlnv reference} $args] o pos
    set name [lindex $pos 0]
    ::mock::new_name $name
    switch -- [dict get $o type] {
        ip {
            set v [dict get $o vlnv]
            if {![::mock::available $v]} { ::mock::refuse "create_bd_cell: IP $v is not in the IP catalog" }
            set e [dict get $::mock::catalog $v]
            set cfg [dict create]
            if {[dict get $e kind] eq "xilinx"} { set cfg [::mock::xilinx_params [dict get $e name]] }
            dict set ::mock::cells $name [dict create kind [dict get $e kind] vlnv $v ref "" name [dict get $e name] config $cfg]
        }
        module {
            set m [dict get $o reference]
            if {![dict exists $::mock::modules $m]} {
                ::mock::refuse "create_bd_cell: no module $m in the project's sources"
            }
            dict set ::mock::cells $name [dict create kind module vlnv "" ref $m name $m \
                config [dict get $::mock::modules $m params]]
        }
        default { ::mock::refuse "create_bd_cell -type [dict get $o type]" }
    }
    return /$name
}

proc ::create_bd_port {args} {
    ::mock::need_bd
    lassign [::mock::opts {dir from to type freq_hz} $args] o pos
    set name [lindex $pos 0]
    ::mock::new_name $name
    set w 1
    if {[dict exists $o from]} { set w [expr {[dict get $o from] - [dict get $o to] + 1}] }
    set cfg [dict create]
    if {[dict exists $o freq_hz]} { dict set cfg CONFIG.FREQ_HZ [dict get $o freq_hz] }
    dict set ::mock::ports $name [dict create dir [dict get $o dir] width $w \
        type [expr {[dict exists $o type] ? [dict get $o type] : "data"}] config $cfg]
    return /$name
}

proc ::create_bd_intf_port {args} {
    ::mock::need_bd
    lassign [::mock::opts {mode vlnv} $args] o pos
    set name [lindex $pos 0]
    ::mock::new_name $name
    if {[dict get $o vlnv] ne "xilinx.com:interface:axis_rtl:1.0"} { ::mock::refuse "interface [dict get $o vlnv] not modelled" }
    if {[dict get $o mode] ni {Slave Master}} { ::mock::refuse "interface port mode [dict get $o mode]" }
    dict set ::mock::iports $name [dict create mode [dict get $o mode] config [dict create CONFIG.TDATA_NUM_BYTES 1]]
    return /$name
}

proc ::mock::getter {what args} {
    lassign [opts {of_objects filter} $args] o pos
    set r {}
    foreach pat $pos {
        set pat /[strip $pat]
        switch -- $what {
            pins { set ok [expr {[pin_info $pat] ne "" && [llength [split [strip $pat] /]] == 2}] }
            intf_pins { set ok [expr {[intf_info $pat] ne "" && [llength [split [strip $pat] /]] == 2}] }
            ports { set ok [dict exists $::mock::ports [strip $pat]] }
            intf_ports { set ok [dict exists $::mock::iports [strip $pat]] }
            cells { set ok [dict exists $::mock::cells [strip $pat]] }
        }
        if {$ok} { lappend r $pat }
    }
    if {[llength $pos] == 0 && $what eq "cells"} {
        foreach c [dict keys $::mock::cells] { lappend r /$c }
    }
    if {[llength $r] == 0 && ![dict exists $o quiet]} { puts "WARNING: \[mock\] get_bd_$what: nothing matched $pos" }
    return $r
}
proc ::get_bd_pins {args} { return [::mock::getter pins {*}$args] }
proc ::get_bd_intf_pins {args} { return [::mock::getter intf_pins {*}$args] }
proc ::get_bd_ports {args} { return [::mock::getter ports {*}$args] }
proc ::get_bd_intf_ports {args} { return [::mock::getter intf_ports {*}$args] }
proc ::get_bd_cells {args} { return [::mock::getter cells {*}$args] }

proc ::connect_bd_net {args} {
    ::mock::need_bd
    lassign [::mock::opts {net} $args] o objs
    if {[llength $objs] < 2} { ::mock::refuse "connect_bd_net needs at least two objects, got '$objs'" }
    set merged {}
    foreach obj $objs {
        if {$obj eq "" || [::mock::pin_info $obj] eq ""} { ::mock::refuse "connect_bd_net: no pin or port '$obj'" }
        if {[dict exists $::mock::net_of $obj]} {
            set n [dict get $::mock::net_of $obj]
            foreach x [dict get $::mock::nets $n] { if {$x ni $merged} { lappend merged $x } }
            dict unset ::mock::nets $n
        } elseif {$obj ni $merged} {
            lappend merged $obj
        }
    }
    ::mock::check_net $merged
    set id [incr ::mock::nnet]
    dict set ::mock::nets $id $merged
    foreach x $merged { dict set ::mock::net_of $x $id }
    return net$id
}

proc ::mock::check_net {objs} {
    set drivers {}
    set widths {}
    foreach x $objs {
        set i [pin_info $x]
        if {$i eq ""} { refuse "net member $x no longer exists" }
        if {[dict get $i dir] eq "O"} { lappend drivers $x }
        lappend widths "$x:[dict get $i width]"
    }
    if {[llength $drivers] > 1} { refuse "a net is driven by [llength $drivers] outputs: $drivers (an input driven twice)" }
    set w0 [lindex [split [lindex $widths 0] :] end]
    foreach w $widths {
        if {[lindex [split $w :] end] != $w0} { refuse "connect_bd_net: widths differ: $widths" }
    }
}

proc ::connect_bd_intf_net {args} {
    ::mock::need_bd
    lassign [::mock::opts {} $args] o objs
    if {[llength $objs] != 2} { ::mock::refuse "connect_bd_intf_net needs two interfaces, got '$objs'" }
    lassign $objs a b
    foreach x [list $a $b] {
        if {$x eq "" || [::mock::intf_info $x] eq ""} { ::mock::refuse "connect_bd_intf_net: no interface '$x'" }
        if {[dict exists $::mock::inet_of $x]} { ::mock::refuse "interface $x is already connected" }
    }
    ::mock::check_inet $a $b
    dict set ::mock::inet_of $a $b
    dict set ::mock::inet_of $b $a
    lappend ::mock::inets [list $a $b]
}

proc ::mock::check_inet {a b} {
    set ia [intf_info $a]; set ib [intf_info $b]
    if {[lsort [list [dict get $ia mode] [dict get $ib mode]]] ne {Master Slave}} {
        refuse "cannot connect $a ([dict get $ia mode]) to $b ([dict get $ib mode])"
    }
    if {[dict get $ia tdata] != [dict get $ib tdata]} {
        refuse "TDATA widths differ: $a [dict get $ia tdata] bits, $b [dict get $ib tdata] bits"
    }
}

# ----------------------------------------------------------------------------------------- checks

# the tensor beats of the stream through an interface object, walking across FIFOs and broadcasters
proc ::mock::stream_beats {obj {seen {}}} {
    variable catalog; variable cells
    if {$obj in $seen} { return "" }
    lappend seen $obj
    set parts [split [strip $obj] /]
    if {[llength $parts] == 2} {
        lassign $parts cell intf
        set c [dict get $cells $cell]
        if {[dict get $c kind] eq "hls"} { return [dict get $catalog [dict get $c vlnv] intfs $intf beats] }
        # through a FIFO or broadcaster: every interface of the cell carries the same stream
        dict for {n i} [dict get [cell_shape $cell] intfs] {
            set x /$cell/$n
            if {[dict exists $::mock::inet_of $x]} {
                set b [stream_beats [dict get $::mock::inet_of $x] $seen]
                if {$b ne ""} { return $b }
            }
        }
    }
    return ""
}

proc ::mock::problems {} {
    variable cells; variable ports; variable iports
    set bad {}
    dict for {name c} $cells {
        set sh [cell_shape $name]
        dict for {pn p} [dict get $sh pins] {
            if {[dict get $p dir] ne "I"} { continue }
            set obj /$name/$pn
            if {[dict get $p intf] ne "" && [dict exists $::mock::inet_of /$name/[dict get $p intf]]} { continue }
            if {![dict exists $::mock::net_of $obj]} { lappend bad "input pin $obj is not connected"; continue }
            set drv 0
            foreach x [dict get $::mock::nets [dict get $::mock::net_of $obj]] {
                if {[dict get [pin_info $x] dir] eq "O"} { incr drv }
            }
            if {$drv != 1} { lappend bad "input pin $obj has $drv drivers" }
        }
        dict for {iname i} [dict get $sh intfs] {
            if {![dict exists $::mock::inet_of /$name/$iname]} { lappend bad "interface /$name/$iname is not connected" }
        }
        if {[dict get $c kind] eq "xilinx" && [dict get $c name] eq "axis_data_fifo"} {
            set beats [stream_beats /$name/S_AXIS]
            set depth [dict get $c config FIFO_DEPTH]
            if {$beats eq ""} { lappend bad "FIFO $name carries no stream from an IP" } elseif {$depth < $beats} {
                lappend bad "FIFO $name is $depth deep, shallower than its tensor's $beats beats"
            }
        }
    }
    dict for {pn p} $ports {
        if {[dict get $p dir] eq "O" && ![dict exists $::mock::net_of /$pn]} { lappend bad "output port $pn is not driven" }
    }
    dict for {pn p} $iports {
        if {![dict exists $::mock::inet_of /$pn]} { lappend bad "interface port $pn is not connected" }
    }
    # widths and drivers again: parameters may have changed after connecting
    dict for {id objs} $::mock::nets {
        if {[catch {check_net $objs} err]} { lappend bad $err }
    }
    foreach pair $::mock::inets {
        if {[catch {check_inet {*}$pair} err]} { lappend bad $err }
    }
    return $bad
}

proc ::validate_bd_design {args} {
    ::mock::need_bd
    set bad [::mock::problems]
    if {[llength $bad]} { ::mock::refuse "validate_bd_design:\n  [join $bad "\n  "]" }
    set ::mock::validated 1
    ::mock::step validate_bd_design
}

proc ::mock::check {} {
    set bad [problems]
    if {[llength $bad]} { refuse "check:\n  [join $bad "\n  "]" }
    if {!$::mock::validated} { refuse "the block design was never validated" }
}

proc ::save_bd_design {args} { ::mock::step save_bd_design }

proc ::make_wrapper {args} {
    lassign [::mock::opts {files} $args] o pos
    if {!$::mock::validated} { ::mock::refuse "make_wrapper before validate_bd_design" }
    set f [file join $::mock::projdir $::mock::project.gen sources_1 bd $::mock::bd hdl $::mock::bd\_wrapper.v]
    file mkdir [file dirname $f]
    set fh [open $f w]; puts $fh "// mock wrapper of $::mock::bd"; close $fh
    set ::mock::wrapped 1
    ::mock::step make_wrapper [dict get $o files]
    return $f
}

proc ::generate_target {args} { ::mock::step generate_target {*}$args }

proc ::synth_design {args} {
    lassign [::mock::opts {top part mode} $args] o pos
    if {!$::mock::wrapped} { ::mock::refuse "synth_design before the wrapper exists" }
    if {[dict get $o top] ne "$::mock::bd\_wrapper"} { ::mock::refuse "synth_design -top [dict get $o top]: not the wrapper" }
    if {[dict get $o part] ne $::mock::part} { ::mock::refuse "synth_design -part [dict get $o part] differs from the project's" }
    set clocked 0
    foreach f [dict get $::mock::files constrs_1] {
        set fh [open $f]; set x [read $fh]; close $fh
        if {[regexp {create_clock -period [0-9.]+ .*get_ports ap_clk} $x]} { set clocked 1 }
    }
    if {!$clocked} { ::mock::refuse "synth_design: no create_clock on ap_clk in the constraints" }
    ::mock::step synth_design [dict get $o top] [dict get $o part] [expr {[dict exists $o mode] ? [dict get $o mode] : ""}]
}

proc ::mock::report {cmd args} {
    lassign [opts {file} $args] o pos
    if {![dict exists $o file]} { refuse "$cmd without -file" }
    if {[lindex $::mock::steps end 0] ni {synth_design report_utilization report_timing_summary}} {
        refuse "$cmd without a synthesized design"
    }
    set fh [open [dict get $o file] w]; puts $fh "mock $cmd: Vivado did not run"; close $fh
    step $cmd [dict get $o file]
}
proc ::report_utilization {args} { ::mock::report report_utilization {*}$args }
proc ::report_timing_summary {args} { ::mock::report report_timing_summary {*}$args }
proc ::write_checkpoint {args} { lassign [::mock::opts {} $args] o pos; ::mock::step write_checkpoint {*}$pos }

namespace eval ::ipx {}
proc ::ipx::package_project {args} {
    lassign [::mock::opts {root_dir vendor library taxonomy module} $args] o pos
    if {!$::mock::wrapped} { ::mock::refuse "ipx::package_project before the design is wrapped" }
    if {[dict get $o module] ne $::mock::bd} { ::mock::refuse "ipx::package_project -module [dict get $o module]: no such block design" }
    file mkdir [dict get $o root_dir]
    set v [dict get $o vendor]:[dict get $o library]:[dict get $o module]:1.0
    dict set ::mock::cores $v [dict get $o root_dir]
    ::mock::step ipx::package_project $v [dict get $o root_dir]
}
proc ::ipx::find_open_core {v} { if {[dict exists $::mock::cores $v]} { return $v }; return "" }
foreach c {create_xgui_files update_checksums check_integrity save_core} {
    proc ::ipx::$c {core} "
        if {!\[dict exists \$::mock::cores \$core\]} { ::mock::refuse \"ipx::$c: no open core \$core\" }
        ::mock::step ipx::$c \$core
    "
}

proc ::launch_simulation {args} {
    lassign [::mock::opts {simset mode} $args] o pos
    set fs sim_1
    if {![dict exists $::mock::fsprops $fs top]} { ::mock::refuse "launch_simulation: sim_1 has no top" }
    set top [dict get $::mock::fsprops $fs top]
    set found 0
    foreach f [dict get $::mock::files sim_1] {
        set fh [open $f]; set x [read $fh]; close $fh
        if {[regexp "module\\s+$top\\M" $x]} { set found 1 }
    }
    if {!$found} { ::mock::refuse "launch_simulation: no module $top in the sim_1 files" }
    set dir [file join $::mock::projdir $::mock::project.sim sim_1 behav xsim]
    file mkdir $dir
    # the scripts run $FXS_MOCK_XSIM <step> <dir> <design.json> <top> <files...> where the test sets it
    ::mock::write_json [file join $dir mock_design.json]
    foreach s {compile elaborate simulate} {
        set fh [open [file join $dir $s.sh] w]
        puts $fh "#!/bin/sh"
        puts $fh "if \[ -z \"\$FXS_MOCK_XSIM\" \]; then echo 'mock xsim: no simulator (set FXS_MOCK_XSIM)'; exit 1; fi"
        puts $fh "exec \$FXS_MOCK_XSIM $s [list $dir] [list $top] [join [dict get $::mock::files sim_1]]"
        close $fh
    }
    ::mock::step launch_simulation [dict exists $o scripts_only] $top
}

# ----------------------------------------------------------------------------------------- Tcl 8.5 only

# Vivado's Tcl is 8.5: hide what 8.6 added, so a stitcher that relies on it fails here too
proc ::mock::tcl85 {} {
    foreach c {lmap try throw tailcall coroutine yield zlib} { catch {rename ::$c {}} }
    foreach {ens subs} {dict map string cat} {
        set m [namespace ensemble configure ::$ens -map]
        foreach s $subs { dict unset m $s }
        namespace ensemble configure ::$ens -map $m
    }
}

# ----------------------------------------------------------------------------------------- JSON

proc ::mock::js {s} {
    return "\"[string map [list \\ \\\\ \" \\\" \n \\n \r \\r \t \\t] $s]\""
}
proc ::mock::jv {v} {
    if {[string is wideinteger -strict $v]} { return $v }
    return [js $v]
}
proc ::mock::jobj {d} {
    set r {}
    dict for {k v} $d { lappend r "[js $k]: $v" }
    return "{[join $r {, }]}"
}
proc ::mock::jarr {l} { return "\[[join $l {, }]\]" }
proc ::mock::jflat {d} {
    set r [dict create]
    dict for {k v} $d { dict set r $k [jv $v] }
    return [jobj $r]
}

proc ::mock::write_json {path} {
    variable cells
    set jc [dict create]
    dict for {name c} $cells {
        set sh [cell_shape $name]
        set jp [dict create]
        dict for {pn p} [dict get $sh pins] { dict set jp $pn [jflat $p] }
        set ji [dict create]
        dict for {n i} [dict get $sh intfs] { dict set ji $n [jflat $i] }
        dict set jc $name [jobj [dict create kind [js [dict get $c kind]] vlnv [js [dict get $c vlnv]] \
            ref [js [dict get $c ref]] ip [js [dict get $c name]] config [jflat [dict get $c config]] \
            pins [jobj $jp] intfs [jobj $ji]]]
    }
    set jp [dict create]
    dict for {n p} $::mock::ports {
        dict set jp $n [jobj [dict create dir [js [dict get $p dir]] width [dict get $p width] \
            type [js [dict get $p type]] config [jflat [dict get $p config]]]]
    }
    set ji [dict create]
    dict for {n p} $::mock::iports {
        dict set ji $n [jobj [dict create mode [js [dict get $p mode]] config [jflat [dict get $p config]]]]
    }
    set jn {}
    dict for {id objs} $::mock::nets {
        set drv ""
        set sinks {}
        foreach x $objs {
            if {[dict get [pin_info $x] dir] eq "O"} { set drv $x } else { lappend sinks [js $x] }
        }
        lappend jn [jobj [dict create driver [js $drv] sinks [jarr $sinks]]]
    }
    set jin {}
    foreach pair $::mock::inets {
        lassign $pair a b
        if {[dict get [intf_info $a] mode] eq "Master"} { set src $a; set dst $b } else { set src $b; set dst $a }
        lappend jin [jobj [dict create source [js $src] sink [js $dst]]]
    }
    set jsteps {}
    foreach s $::mock::steps {
        set x {}
        foreach a $s { lappend x [js $a] }
        lappend jsteps [jarr $x]
    }
    set jfiles [dict create]
    dict for {fs fl} $::mock::files {
        set x {}
        foreach f $fl { lappend x [js $f] }
        dict set jfiles $fs [jarr $x]
    }
    set jfsp [dict create]
    dict for {fs p} $::mock::fsprops { dict set jfsp $fs [jflat $p] }
    set jfp [dict create]
    dict for {f p} $::mock::fileprops { dict set jfp $f [jflat $p] }
    set repos {}
    foreach r $::mock::repos_seen { lappend repos [js $r] }
    set top [dict create project [js $::mock::project] dir [js $::mock::projdir] part [js $::mock::part] \
        ip_repo_paths [jarr $repos] project_props [jflat $::mock::pprops] bd [js $::mock::bd] \
        cells [jobj $jc] ports [jobj $jp] intf_ports [jobj $ji] nets [jarr $jn] intf_nets [jarr $jin] \
        files [jobj $jfiles] fileset_props [jobj $jfsp] file_props [jobj $jfp] steps [jarr $jsteps] \
        validated $::mock::validated]
    set fh [open $path w]
    puts $fh [jobj $top]
    close $fh
}
