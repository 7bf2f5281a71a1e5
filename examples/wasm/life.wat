;; Conway's Game of Life on a torus, written for livemig's Wasm guest demo.
;;
;; init(mib)      grows memory to mib MiB: two grids of 4096-cell rows (a
;;                byte per cell), the first seeded by xorshift32 (3/8 alive)
;; step(budget)   computes max(1, budget / 4096) rows of the next generation
;;                into the other grid; after the last row the grids swap
;; checksum()     FNV-1a over both grids (8 bytes at a time), mixed with the
;;                generation and row: equal only for equal states
;;
;; All its state is memory and mutable globals, so livemig can move it.
(module
  (memory (export "memory") 1)
  (global $rows (mut i32) (i32.const 0))
  (global $grid (mut i32) (i32.const 0))
  (global $src (mut i32) (i32.const 0))
  (global $dst (mut i32) (i32.const 0))
  (global $row (mut i32) (i32.const 0))
  (global $gen (mut i32) (i32.const 0))

  (func (export "init") (param $mib i32)
    (local $i i32) (local $x i32)
    (drop (memory.grow
      (i32.sub (i32.shl (local.get $mib) (i32.const 4)) (memory.size))))
    (global.set $grid (i32.shl (local.get $mib) (i32.const 19)))
    (global.set $rows (i32.shr_u (global.get $grid) (i32.const 12)))
    (global.set $src (i32.const 0))
    (global.set $dst (global.get $grid))
    (global.set $row (i32.const 0))
    (global.set $gen (i32.const 0))
    (local.set $x (i32.const 2463534242))
    (block $done
      (loop $fill
        (br_if $done (i32.ge_u (local.get $i) (global.get $grid)))
        (local.set $x (i32.xor (local.get $x)
          (i32.shl (local.get $x) (i32.const 13))))
        (local.set $x (i32.xor (local.get $x)
          (i32.shr_u (local.get $x) (i32.const 17))))
        (local.set $x (i32.xor (local.get $x)
          (i32.shl (local.get $x) (i32.const 5))))
        (i32.store8 (local.get $i)
          (i32.lt_u (i32.shr_u (local.get $x) (i32.const 29)) (i32.const 3)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $fill))))

  ;; One row of the next generation: row $row of $src into $dst.
  (func $row
    (local $up i32) (local $mid i32) (local $down i32) (local $out i32)
    (local $x i32) (local $l i32) (local $r i32) (local $s i32)
    (local.set $up (i32.add (global.get $src) (i32.shl
      (i32.rem_u (i32.sub (i32.add (global.get $row) (global.get $rows))
        (i32.const 1)) (global.get $rows))
      (i32.const 12))))
    (local.set $mid (i32.add (global.get $src)
      (i32.shl (global.get $row) (i32.const 12))))
    (local.set $down (i32.add (global.get $src) (i32.shl
      (i32.rem_u (i32.add (global.get $row) (i32.const 1)) (global.get $rows))
      (i32.const 12))))
    (local.set $out (i32.add (global.get $dst)
      (i32.shl (global.get $row) (i32.const 12))))
    (loop $cells
      (local.set $l (i32.and (i32.sub (local.get $x) (i32.const 1))
        (i32.const 4095)))
      (local.set $r (i32.and (i32.add (local.get $x) (i32.const 1))
        (i32.const 4095)))
      (local.set $s (i32.add
        (i32.add
          (i32.add (i32.load8_u (i32.add (local.get $up) (local.get $l)))
            (i32.load8_u (i32.add (local.get $up) (local.get $x))))
          (i32.add (i32.load8_u (i32.add (local.get $up) (local.get $r)))
            (i32.load8_u (i32.add (local.get $mid) (local.get $l)))))
        (i32.add
          (i32.add (i32.load8_u (i32.add (local.get $mid) (local.get $r)))
            (i32.load8_u (i32.add (local.get $down) (local.get $l))))
          (i32.add (i32.load8_u (i32.add (local.get $down) (local.get $x)))
            (i32.load8_u (i32.add (local.get $down) (local.get $r)))))))
      (i32.store8 (i32.add (local.get $out) (local.get $x))
        (i32.or (i32.eq (local.get $s) (i32.const 3))
          (i32.and (i32.eq (local.get $s) (i32.const 2))
            (i32.load8_u (i32.add (local.get $mid) (local.get $x))))))
      (local.set $x (i32.add (local.get $x) (i32.const 1)))
      (br_if $cells (i32.lt_u (local.get $x) (i32.const 4096)))))

  (func (export "step") (param $budget i32)
    (local $n i32) (local $t i32)
    (local.set $n (i32.shr_u (local.get $budget) (i32.const 12)))
    (if (i32.eqz (local.get $n)) (then (local.set $n (i32.const 1))))
    (block $done
      (loop $rows
        (br_if $done (i32.eqz (local.get $n)))
        (call $row)
        (global.set $row (i32.add (global.get $row) (i32.const 1)))
        (if (i32.ge_u (global.get $row) (global.get $rows))
          (then
            (global.set $row (i32.const 0))
            (global.set $gen (i32.add (global.get $gen) (i32.const 1)))
            (local.set $t (global.get $src))
            (global.set $src (global.get $dst))
            (global.set $dst (local.get $t))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $rows))))

  (func (export "checksum") (result i64)
    (local $i i32) (local $end i32) (local $h i64)
    (local.set $h (i64.const 0xcbf29ce484222325))
    (local.set $end (i32.shl (global.get $grid) (i32.const 1)))
    (block $done
      (loop $words
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $h (i64.mul
          (i64.xor (local.get $h) (i64.load (local.get $i)))
          (i64.const 0x100000001b3)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $words)))
    (i64.xor (local.get $h)
      (i64.or (i64.shl (i64.extend_i32_u (global.get $gen)) (i64.const 32))
        (i64.extend_i32_u (global.get $row))))))
