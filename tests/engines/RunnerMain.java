// Runs one node of codelibs' Elasticsearch / OpenSearch runner in this JVM until the JVM is told to stop.
// Started as a single-file source program (`java -cp <runner classpath> RunnerMain.java <runner class> <args>`), so
// nothing is compiled ahead. Reflection keeps this one file usable with either runner; unlike the runners' own
// main(), it prints why a start failed and lets the HTTP port be any port (not only below 9300).
import java.lang.reflect.Method;
import java.util.Arrays;

public class RunnerMain {
    public static void main(String[] args) throws Exception {
        Class<?> runnerClass = Class.forName(args[0]);
        Object runner = runnerClass.getConstructor().newInstance();
        runnerClass.getMethod("setMaxHttpPort", int.class).invoke(runner, -1);
        Method close = runnerClass.getMethod("close");
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                close.invoke(runner);
            } catch (Exception e) {
                e.printStackTrace();
            }
        }));
        try {
            runnerClass.getMethod("build", String[].class).invoke(runner, (Object) Arrays.copyOfRange(args, 1, args.length));
        } catch (Throwable t) {
            t.printStackTrace();
            System.exit(1);
        }
        System.out.println("RunnerMain: node started");
        Thread.currentThread().join();
    }
}
