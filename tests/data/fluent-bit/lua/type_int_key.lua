function cb(tag, ts, record)
    record.lua_int = 10.2
    record.lua_int_2 = -3.7
    record.lua = 7.9
    record.other = 1.5
    record.lua_int_s = "12.5"
    return 1, ts, record
end
