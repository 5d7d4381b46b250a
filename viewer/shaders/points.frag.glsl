// Round antialiased points (about one pixel of smooth edge), or a thumbnail in image mode.
uniform int u_image_mode;
uniform sampler2D u_atlas;
uniform vec2 u_cell_uv;         // size of one atlas cell in texture coordinates

varying vec4 v_color;
varying float v_size;
varying vec2 v_cell;
varying float v_highlight;

void main() {
    vec2 pc = gl_PointCoord;
    if (u_image_mode == 1 && v_color.a > 0.5) {
        vec4 t = texture2D(u_atlas, (v_cell + pc) * u_cell_uv);
        // thin frame in the class colour so images keep their colouring
        vec2 e = min(pc, 1.0 - pc) * v_size;
        float edge = 1.0 - step(1.0, min(e.x, e.y));
        gl_FragColor = vec4(mix(t.rgb, v_color.rgb, edge), 1.0);
        return;
    }
    float r = length(pc - 0.5) * 2.0;
    float aa = 2.0 / max(v_size, 1.0);
    float a = 1.0 - smoothstep(1.0 - aa, 1.0, r);
    if (a <= 0.0) discard;
    vec3 rgb = v_color.rgb;
    if (v_highlight > 0.5) {
        float ring = smoothstep(0.55, 0.7, r);
        rgb = mix(rgb, vec3(1.0), ring);
    }
    gl_FragColor = vec4(rgb, v_color.a * a);
}
