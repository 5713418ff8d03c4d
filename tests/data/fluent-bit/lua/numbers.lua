function cb(tag, ts, record)
    record.int_like = 3.0
    record.half = 0.5
    record.neg_float = -2.75
    record.big = 2^53 + 1
    record.huge = 1e20
    record.neg_zero = -0.0
    record.inf = 1/0
    record.minus_inf = -1/0
    record.sum = record.code + 1
    record.div = record.code / 3
    record.numstr = tostring(record.code)
    return 2, ts, record
end
