function cb(tag, ts, record)
    record.upper = string.upper(record.log)
    record.sub = record.log:gsub("^[^e]+e", "")
    record.len = #record.log
    record.joined = record.k .. "-" .. tag
    record.libs = type(io) .. "," .. type(os) .. "," .. type(jit) .. "," .. type(bit) .. "," .. type(ffi or require("ffi"))
    return 2, ts, record
end
