import asyncio, time, asyncssh
def test_probe(sshd_server):
    s = sshd_server
    r = s.run("setsid nohup sh -c 'sleep 1001 & sleep 1002; wait' >/dev/null 2>&1 </dev/null & echo $!; ps -o pid,ppid,pgid,sid,args", check=True, timeout=20)
    print(r.stdout)
    pid = int(r.stdout.split()[0])
    print(s.run(f"ps -o pid,ppid,pgid,sid,args -u conveyor-ssh").stdout)
    print(s.processes())
    print(s.run(f"kill -- -{pid}; sleep 0.2; ps -o pid,ppid,pgid,sid,args -u conveyor-ssh").stdout)
    # nohup without redirect: does ssh hang?
    t=time.monotonic()
    try:
        r = s.run("setsid nohup sleep 7 & echo $!", timeout=20); print("nohup no-redirect", r, time.monotonic()-t)
    except Exception as e: print("nohup no-redirect", e, time.monotonic()-t)

    async def main():
        async with asyncssh.connect(**s.connect_options()) as conn:
            r = await conn.run("whoami; echo $CONVEYOR_SSHD_SESSION", check=True)
            print("asyncssh", r.stdout)
            proc = await conn.create_process("exec sleep 1004")
            await asyncio.sleep(0.3)
            print(s.processes())
            proc.send_signal("TERM")
            res = await proc.wait()
            print("signal:", res.exit_status, res.exit_signal)
            proc = await conn.create_process("sleep 1005; echo done")
            await asyncio.sleep(0.3)
            proc.send_signal("TERM")
            res = await proc.wait()
            print("signal non-exec:", res.exit_status, res.exit_signal, s.processes())
        conn = await asyncssh.connect(**s.connect_options())
        proc = await conn.create_process("setsid nohup sleep 1006 >/dev/null 2>&1 </dev/null & echo $!; wait $!")
        pid = int(await proc.stdout.readline())
        proc2 = await conn.create_process("sleep 1007")
        proc3 = await conn.create_process("sleep 1008", term_type="xterm")
        await asyncio.sleep(0.3)
        print("before abort", s.processes())
        conn.abort()
        await asyncio.sleep(1)
        print("after abort", pid, s.processes())
    asyncio.run(main())
    print(s.run("pkill -u conveyor-ssh sleep; sleep 0.3; ps -u conveyor-ssh -o pid,stat,args").stdout)
